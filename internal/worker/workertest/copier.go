package workertest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/cropq/cropq/internal/objectkey"
	"github.com/cropq/cropq/internal/results"
)

// Copier is in-memory object storage behind the result host (worker.Copier
// and worker.StoredCopier): Copy "downloads" any result URL not marked
// expired and stores an object at the key the real Copier would render.
type Copier struct {
	// Bucket is the default bucket (default "results"); KeyTemplate the
	// default key template (default objectkey.DefaultTemplate).
	Bucket      string
	KeyTemplate string

	mu      sync.Mutex
	objects map[string]results.Stored // by bucket + "/" + key
	owners  map[string]string         // request id of each object, by bucket + "/" + key
	crops   map[string]results.Crop   // the crop each object holds, by bucket + "/" + key
	buckets map[string]bool           // requests' own buckets that exist
	expired map[string]bool           // result URLs the host refuses (403)
	down    error                     // the default bucket's failure, nil when up
	copied  []string                  // source URLs of successful copies
	copies  int
	checks  int
	reusedN int
}

// NewCopier returns storage with an empty default bucket "results".
func NewCopier() *Copier {
	return &Copier{Bucket: "results", KeyTemplate: objectkey.DefaultTemplate,
		objects: map[string]results.Stored{}, owners: map[string]string{}, crops: map[string]results.Crop{}, buckets: map[string]bool{}, expired: map[string]bool{}}
}

// AddBucket makes a request's own bucket exist.
func (c *Copier) AddBucket(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buckets[name] = true
}

// Expire makes the result host refuse url as expired (HTTP 403), as it does
// past the URL's Expires.
func (c *Copier) Expire(url string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expired[url] = true
}

// SetDown makes the default bucket unreachable (err, e.g. a connection
// refused) or reachable again (nil): uploads and bucket checks fail.
func (c *Copier) SetDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = err
}

// Copy stores the result at sourceURL as obj.
func (c *Copier) Copy(ctx context.Context, sourceURL string, obj results.Object) (results.Stored, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.copies++
	if err := ctx.Err(); err != nil {
		return results.Stored{}, &results.SourceError{URL: sourceURL, Err: err}
	}
	if c.expired[sourceURL] {
		return results.Stored{}, &results.SourceError{URL: sourceURL, StatusCode: 403, Expired: true, Err: errors.New("403 Forbidden: Request has expired")}
	}
	body := sha256.Sum256([]byte(sourceURL))
	st, err := c.put(obj, hex.EncodeToString(body[:16]), int64(len(sourceURL)))
	if err == nil {
		c.copied = append(c.copied, sourceURL)
	}
	return st, err
}

// CopyStored copies an object stored earlier, server-side; a
// *results.MissingError when it is gone.
func (c *Copier) CopyStored(ctx context.Context, from results.Stored, obj results.Object) (results.Stored, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return results.Stored{}, err
	}
	src, ok := c.objects[from.Bucket+"/"+from.Key]
	if !ok || src.ETag != from.ETag {
		return results.Stored{}, &results.MissingError{Bucket: from.Bucket, Key: from.Key, Status: 404, Reason: "is gone"}
	}
	st, err := c.put(obj, src.ETag, src.Size)
	if err == nil {
		c.reusedN++
	}
	return st, err
}

// CheckKey refuses, as the real Copier does before paying, a key that holds
// another request's object (*results.KeyTakenError).
func (c *Copier) CheckKey(ctx context.Context, obj results.Object) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	bucket, key, err := c.place(obj)
	if err != nil {
		return err
	}
	if owner, ok := c.owners[bucket+"/"+key]; ok && owner != obj.RequestID && (obj.Crop.Source == "" || c.crops[bucket+"/"+key].Source != obj.Crop.Source) {
		return &results.KeyTakenError{Bucket: bucket, Key: key}
	}
	return ctx.Err()
}

// put writes an object where obj says, never over another request's;
// c.mu held.
func (c *Copier) put(obj results.Object, etag string, size int64) (results.Stored, error) {
	bucket, key, err := c.place(obj)
	if err != nil {
		return results.Stored{}, err
	}
	if err := c.reachable(bucket); err != nil {
		return results.Stored{}, &results.UploadError{Op: "upload", Bucket: bucket, Key: key, Err: err}
	}
	if owner, ok := c.owners[bucket+"/"+key]; ok && owner != obj.RequestID && (obj.Crop.Source == "" || c.crops[bucket+"/"+key].Source != obj.Crop.Source) {
		return results.Stored{}, &results.KeyTakenError{Bucket: bucket, Key: key}
	}
	st := results.Stored{Bucket: bucket, Key: key, ETag: etag, ContentType: "image/png", Size: size}
	c.objects[bucket+"/"+key] = st
	c.owners[bucket+"/"+key] = obj.RequestID
	c.crops[bucket+"/"+key] = obj.Crop
	return st, nil
}

// Holds reports whether obj's destination holds exactly obj's crop, as the
// real Copier does (keys of templates without {requestId} only).
func (c *Copier) Holds(ctx context.Context, obj results.Object, _ string) (results.Stored, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	bucket, key, err := c.place(obj)
	if err != nil || obj.Crop.Key == "" || obj.Crop.Version == "" {
		return results.Stored{}, false, err
	}
	st, ok := c.objects[bucket+"/"+key]
	got := c.crops[bucket+"/"+key]
	if !ok || got.Key != obj.Crop.Key || got.Version != obj.Crop.Version {
		return results.Stored{}, false, ctx.Err()
	}
	return st, true, ctx.Err()
}

// place renders obj's key (every result here is a PNG).
func (c *Copier) place(obj results.Object) (bucket, key string, err error) {
	bucket, tmpl := c.Bucket, c.KeyTemplate
	if obj.Bucket != "" {
		bucket = obj.Bucket
	}
	if obj.KeyTemplate != "" {
		tmpl = obj.KeyTemplate
	}
	key, err = objectkey.Render(tmpl, objectkey.Vars{RequestID: obj.RequestID, Width: obj.Width, Height: obj.Height, Ext: "png", Date: time.Now()})
	return bucket, key, err
}

// reachable is the bucket's state; c.mu held.
func (c *Copier) reachable(bucket string) error {
	switch {
	case bucket == c.Bucket:
		return c.down
	case !c.buckets[bucket]:
		return errors.New("NoSuchBucket")
	}
	return nil
}

// CheckBucket checks the default bucket.
func (c *Copier) CheckBucket(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks++
	if err := c.reachable(c.Bucket); err != nil {
		return &results.UploadError{Op: "head bucket", Bucket: c.Bucket, Err: err}
	}
	return ctx.Err()
}

// CheckBucketOf checks a request's own bucket: a *results.BucketError when
// it does not exist.
func (c *Copier) CheckBucketOf(ctx context.Context, bucket string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks++
	if err := c.reachable(bucket); err != nil {
		return &results.BucketError{Bucket: bucket, Status: 404, Err: err}
	}
	return ctx.Err()
}

// Object returns the object at bucket/key.
func (c *Copier) Object(bucket, key string) (results.Stored, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.objects[bucket+"/"+key]
	return st, ok
}

// Delete removes an object, as an operator's hand would.
func (c *Copier) Delete(bucket, key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.objects, bucket+"/"+key)
	delete(c.owners, bucket+"/"+key)
}

// Objects is how many objects are stored.
func (c *Copier) Objects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.objects)
}

// Copies is how many result downloads were tried.
func (c *Copier) Copies() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.copies
}

// Copied lists the source URLs of the successful copies, in order.
func (c *Copier) Copied() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.copied...)
}

// Reused is how many server-side copies of stored objects succeeded.
func (c *Copier) Reused() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reusedN
}

// Checks is how many bucket checks were made.
func (c *Copier) Checks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks
}
