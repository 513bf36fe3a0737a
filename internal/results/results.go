// Package results copies a cropping result from its short-lived URL into S3
// (or MinIO), streaming: the download feeds the upload, multipart above a
// threshold through the SDK's transfer manager, with the type, size and
// image header checked on the way and nothing left behind on failure.
package results

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/imageformat"
	"github.com/cropq/cropq/internal/namespace"
	"github.com/cropq/cropq/internal/objectkey"
	"github.com/cropq/cropq/internal/redact"
)

// DefaultMaxDownloadBytes bounds a result download (Config.MaxDownloadBytes).
const DefaultMaxDownloadBytes = 64 << 20

// Config configures a Copier. Zero values take defaults.
type Config struct {
	Bucket      string // required
	KeyTemplate string // default objectkey.DefaultTemplate
	// MaxDownloadBytes bounds a result (default 64 MiB).
	MaxDownloadBytes int64
	// Timeout bounds one whole copy (default 2m).
	Timeout time.Duration
	// PartSize is the multipart part size (default and minimum 5 MiB). A
	// result of known length up to PartSize is sent in one PutObject from a
	// buffer of its own size; larger or unknown lengths go multipart.
	PartSize int64
	// MaxConcurrentMultipart bounds the multipart uploads in flight across
	// all copies (default 1). Each holds two part buffers, and the transfer
	// manager frees them after every upload, so with Go's GC headroom one
	// upload costs about 3× PartSize of RSS: the benchmark's memory row.
	MaxConcurrentMultipart int
	// ResultHosts are the hosts result URLs may come from: exact names or
	// "*.suffix" patterns, ports ignored (nil: DefaultResultHosts, the
	// vendor's OSS domains). Each redirect is checked again.
	ResultHosts []string
	// AllowHTTP accepts http:// result URLs (the local emulator); otherwise
	// only https.
	AllowHTTP bool
	// HTTPClient downloads results (default: one with transport timeouts and
	// at most 3 redirects, each re-checked against ResultHosts).
	HTTPClient *http.Client
	Now        func() time.Time
	// Walls put each tenant's results in its own namespace (package
	// namespace); their DefaultBucket defaults to Bucket.
	Walls namespace.Walls
}

// DefaultResultHosts are the vendor's result domains (Alibaba Cloud OSS).
func DefaultResultHosts() []string { return []string{"*.aliyuncs.com"} }

// HostError is a result URL refused by the allow-list: the answer did not
// come from where results come from, and retrying will not change that.
type HostError struct {
	URL    string // without its query
	Reason string
}

func (e *HostError) Error() string { return "storage: result URL " + e.URL + " refused: " + e.Reason }

// checkResultURL enforces the scheme and the host allow-list.
func (c Config) checkResultURL(u *url.URL) error {
	shown := redact.URL(u.String())
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && c.AllowHTTP:
	default:
		return &HostError{URL: shown, Reason: "only https is accepted (scheme " + strconv.Quote(u.Scheme) + ")"}
	}
	host := strings.ToLower(u.Hostname())
	for _, pat := range c.ResultHosts {
		pat = strings.ToLower(pat)
		if host == pat || (strings.HasPrefix(pat, "*.") && strings.HasSuffix(host, pat[1:])) {
			return nil
		}
	}
	return &HostError{URL: shown, Reason: fmt.Sprintf("host %q is not in the allowed result hosts %v", host, c.ResultHosts)}
}

// Object describes a result to store.
type Object struct {
	RequestID    string
	APIRequestID string
	// Width and Height, when set, must match the image header of the result.
	Width, Height int
	// Tenant's namespace holds the object (namespace.Walls).
	Tenant string
	// Bucket and KeyTemplate override the configured ones for this object.
	Bucket      string
	KeyTemplate string
	// Metadata is stored as S3 user metadata, beside request-id,
	// api-request-id, width and height.
	Metadata map[string]string
	// Crop names the crop the object holds (package dedup), stored as
	// metadata: it lets a re-sync under a fixed key template replace an
	// older crop of the same source, and find a destination that already
	// holds this very crop (Holds). Zero without result reuse.
	Crop Crop
}

// Crop names a crop: CropKey its crop key (what the result depends on,
// the bytes included), Source the identity of its source whatever its
// bytes (a URL image's URL and size), Version the paid result it is a copy
// of. None is a request id: another tenant's is never named.
type Crop struct {
	Key, Source, Version string
}

// Metadata keys of Crop.
const (
	metaCropKey     = "crop-key"
	metaCropSource  = "crop-source"
	metaCropVersion = "crop-version"
)

// Stored is where a result landed.
type Stored struct {
	Bucket, Key, ETag, ContentType string
	Size                           int64
}

// SourceError is a result that could not be downloaded or is not acceptable.
type SourceError struct {
	URL        string // without its query (which holds the signature)
	StatusCode int    // HTTP status, 0 when none
	// Expired: the result host answered 403/410 (past its Expires), so the
	// result must be cropped again.
	Expired bool
	Err     error
}

func (e *SourceError) Error() string {
	msg := "storage: download " + e.URL
	if e.StatusCode != 0 {
		msg += fmt.Sprintf(": HTTP %d", e.StatusCode)
	}
	if e.Expired {
		msg += ": expired"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}
func (e *SourceError) Unwrap() error { return e.Err }

// UploadError is a failure writing to S3.
type UploadError struct {
	Op          string
	Bucket, Key string
	Err         error
}

func (e *UploadError) Error() string {
	return fmt.Sprintf("storage: %s s3://%s/%s: %v", e.Op, e.Bucket, e.Key, e.Err)
}
func (e *UploadError) Unwrap() error { return e.Err }

// BucketError is a destination bucket that does not exist (HTTP 404):
// known before anything is paid for, and not fixed by retrying.
type BucketError struct {
	Bucket string
	Status int
	Err    error
}

func (e *BucketError) Error() string {
	return fmt.Sprintf("storage: bucket %s cannot be used (HTTP %d): %v", e.Bucket, e.Status, e.Err)
}
func (e *BucketError) Unwrap() error { return e.Err }

// Copier copies results into S3. It is safe for concurrent use.
type Copier struct {
	s3 *s3.Client
	// The v1 transfer manager is deprecated in favour of
	// feature/s3/transfermanager, which is still v0.x (its API may change);
	// move when it reaches v1.
	//lint:ignore SA1019 see above
	uploader  *manager.Uploader
	cfg       Config
	multipart chan struct{} // semaphore of multipart uploads
}

const minPartSize = 5 << 20

// ErrNoBucket is New's error for a Config without a bucket.
var ErrNoBucket = errors.New("storage: Config.Bucket is required")

// New returns a Copier writing through client.
func New(client *s3.Client, cfg Config) (*Copier, error) {
	if cfg.Bucket == "" {
		return nil, ErrNoBucket
	}
	if cfg.KeyTemplate == "" {
		cfg.KeyTemplate = objectkey.DefaultTemplate
	}
	if _, err := objectkey.Render(cfg.KeyTemplate, objectkey.Vars{RequestID: "check", Width: 1, Height: 1, Ext: "png"}); err != nil {
		return nil, err
	}
	if cfg.MaxDownloadBytes <= 0 {
		cfg.MaxDownloadBytes = DefaultMaxDownloadBytes
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.PartSize < minPartSize {
		cfg.PartSize = minPartSize
	}
	if cfg.MaxConcurrentMultipart <= 0 {
		cfg.MaxConcurrentMultipart = 1
	}
	if cfg.ResultHosts == nil {
		cfg.ResultHosts = DefaultResultHosts()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient(cfg.checkResultURL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Walls.DefaultBucket == "" {
		cfg.Walls.DefaultBucket = cfg.Bucket
	}
	//lint:ignore SA1019 see Copier.uploader
	up := manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = cfg.PartSize
		u.Concurrency = 1 // parts in flight per upload: memory is the limit, not bandwidth
	})
	return &Copier{s3: client, uploader: up, cfg: cfg, multipart: make(chan struct{}, cfg.MaxConcurrentMultipart)}, nil
}

func defaultHTTPClient(allowed func(*url.URL) error) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 30 * time.Second
	t.MaxIdleConnsPerHost = 32
	return &http.Client{
		Transport: t,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("more than 3 redirects")
			}
			return allowed(req.URL)
		},
	}
}

// CheckBucket reports whether the configured bucket is reachable (the
// storage gate and readiness): any failure, 403 included, is an
// *UploadError.
func (c *Copier) CheckBucket(ctx context.Context) error {
	if _, err := c.headBucket(ctx, c.cfg.Bucket); err != nil {
		return &UploadError{Op: "head bucket", Bucket: c.cfg.Bucket, Err: err}
	}
	return nil
}

// CheckBucketOf reports whether a request's own bucket is usable: a
// *BucketError when it does not exist, an *UploadError when S3 could not
// tell. A bucket HEAD may not look at (403: HEAD needs s3:ListBucket, which
// a write-only bucket, often cross-account, does not grant) passes, and its
// upload decides.
func (c *Copier) CheckBucketOf(ctx context.Context, bucket string) error {
	status, err := c.headBucket(ctx, bucket)
	switch {
	case err == nil, status == http.StatusForbidden:
		return nil
	case status == http.StatusNotFound:
		return &BucketError{Bucket: bucket, Status: status, Err: err}
	default:
		return &UploadError{Op: "head bucket", Bucket: bucket, Err: err}
	}
}

// headBucket is a HEAD of bucket, with the HTTP status when S3 answered.
func (c *Copier) headBucket(ctx context.Context, bucket string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)})
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode(), err
	}
	return 0, err
}

// Copy downloads sourceURL and uploads it as obj. On any error nothing is
// left in the bucket.
func (c *Copier) Copy(ctx context.Context, sourceURL string, obj Object) (Stored, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	shown := redact.URL(sourceURL)
	u, err := url.Parse(sourceURL)
	if err != nil {
		return Stored{}, &HostError{URL: shown, Reason: "not a URL"}
	}
	if err := c.cfg.checkResultURL(u); err != nil {
		return Stored{}, err
	}
	// The URL's Expires is on the vendor's clock, not this worker's: the
	// download is tried, and the result host's refusal (403/410) says it
	// expired. A refused download is cheap; a paid call made because this
	// clock runs ahead is not.

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sourceURL, nil)
	if err != nil {
		return Stored{}, &SourceError{URL: shown, Err: err}
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return Stored{}, &SourceError{URL: shown, Err: redact.Error(err)}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusGone:
		return Stored{}, &SourceError{URL: shown, StatusCode: resp.StatusCode, Expired: true}
	case resp.StatusCode != http.StatusOK:
		return Stored{}, &SourceError{URL: shown, StatusCode: resp.StatusCode}
	}
	size := resp.ContentLength // -1 when unknown
	if size > c.cfg.MaxDownloadBytes {
		return Stored{}, &SourceError{URL: shown, StatusCode: resp.StatusCode, Err: fmt.Errorf("result of %d bytes exceeds the %d-byte limit", size, c.cfg.MaxDownloadBytes)}
	}

	// Type and image header, from the first bytes.
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	head, _ := br.Peek(64 << 10)
	ctype, ext, err := contentType(resp.Header.Get("Content-Type"), head)
	if err != nil {
		return Stored{}, &SourceError{URL: shown, StatusCode: resp.StatusCode, Err: err}
	}
	if obj.Width > 0 && obj.Height > 0 {
		info, err := cropapi.DecodeImageHeader(bytes.NewReader(head))
		if err != nil {
			return Stored{}, &SourceError{URL: shown, StatusCode: resp.StatusCode, Err: fmt.Errorf("result image %w", err)}
		}
		if info.Width != obj.Width || info.Height != obj.Height {
			return Stored{}, &SourceError{URL: shown, StatusCode: resp.StatusCode,
				Err: fmt.Errorf("result is %d×%d, want %d×%d", info.Width, info.Height, obj.Width, obj.Height)}
		}
	}

	bucket, key, meta, err := c.destination(obj, ext)
	if err != nil {
		return Stored{}, err
	}
	body := &countingReader{r: br, want: size, max: c.cfg.MaxDownloadBytes}
	out := Stored{Bucket: bucket, Key: key, ContentType: ctype}

	if size >= 0 && size <= c.cfg.PartSize {
		// Small and of known length: one PutObject from a buffer of exactly
		// that size. A seekable body lets the SDK sign it over plain HTTP.
		buf := make([]byte, size)
		if _, err := io.ReadFull(body, buf); err != nil {
			if body.err != nil {
				err = body.err
			}
			return Stored{}, &SourceError{URL: shown, StatusCode: resp.StatusCode, Err: err}
		}
		if err := body.finish(); err != nil {
			return Stored{}, &SourceError{URL: shown, StatusCode: resp.StatusCode, Err: err}
		}
		cond, err := c.claim(ctx, bucket, key, obj)
		if err != nil {
			return Stored{}, err
		}
		put, err := c.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
			Body: bytes.NewReader(buf), ContentLength: aws.Int64(size), ContentType: aws.String(ctype), Metadata: meta,
			IfNoneMatch: cond.noneMatch, IfMatch: cond.match})
		if err != nil {
			return c.lostRace(ctx, out, obj.RequestID, &UploadError{Op: "put", Bucket: bucket, Key: key, Err: err})
		}
		out.ETag, out.Size = strings.Trim(aws.ToString(put.ETag), `"`), size
		return out, nil
	}

	// Large or of unknown length: multipart through the transfer manager,
	// which reads one part at a time and aborts the upload on a read error.
	select {
	case c.multipart <- struct{}{}:
		defer func() { <-c.multipart }()
	case <-ctx.Done():
		return Stored{}, &UploadError{Op: "wait for a multipart slot", Bucket: bucket, Key: key, Err: ctx.Err()}
	}
	cond, err := c.claim(ctx, bucket, key, obj)
	if err != nil {
		return Stored{}, err
	}
	//lint:ignore SA1019 see Copier.uploader
	up, err := c.uploader.Upload(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
		Body: body, ContentType: aws.String(ctype), Metadata: meta, IfNoneMatch: cond.noneMatch, IfMatch: cond.match},
		cond.onComplete)
	if body.err != nil {
		// The source failed mid-way; the manager aborted the upload.
		return Stored{}, &SourceError{URL: shown, StatusCode: resp.StatusCode, Err: body.err}
	}
	if err != nil {
		return c.lostRace(ctx, out, obj.RequestID, &UploadError{Op: "upload", Bucket: bucket, Key: key, Err: err})
	}
	out.ETag, out.Size = strings.Trim(aws.ToString(up.ETag), `"`), body.n
	return out, nil
}

// countingReader enforces the byte count: at most max, and exactly want
// when the length was announced.
type countingReader struct {
	r    io.Reader
	n    int64
	want int64 // -1 unknown
	max  int64
	err  error
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	switch {
	case c.n > c.max:
		c.err = fmt.Errorf("result exceeds the %d-byte limit", c.max)
	case c.want >= 0 && c.n > c.want:
		c.err = fmt.Errorf("result longer than its Content-Length %d", c.want)
	case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && c.want >= 0 && c.n < c.want:
		c.err = fmt.Errorf("result truncated at %d of %d bytes: %w", c.n, c.want, io.ErrUnexpectedEOF)
	case err != nil && !errors.Is(err, io.EOF):
		c.err = fmt.Errorf("read result: %w", err)
	}
	if c.err != nil {
		return n, c.err
	}
	return n, err
}

// finish checks that nothing follows the announced length.
func (c *countingReader) finish() error {
	var one [1]byte
	if n, _ := c.Read(one[:]); n > 0 && c.err == nil {
		c.err = fmt.Errorf("result longer than its Content-Length %d", c.want)
	}
	if c.err != nil && !errors.Is(c.err, io.EOF) {
		return c.err
	}
	return nil
}

// contentType takes the declared type, sniffed when missing or generic, and
// refuses anything that is not an image.
func contentType(declared string, head []byte) (ctype, ext string, err error) {
	mt, _, _ := mime.ParseMediaType(declared)
	if mt == "" || mt == "application/octet-stream" || mt == "binary/octet-stream" {
		mt, _, _ = mime.ParseMediaType(http.DetectContentType(head))
	}
	f, ok := imageformat.ByContentType(mt)
	if !ok {
		return "", "", fmt.Errorf("content type %q is not an accepted image type", mt)
	}
	return mt, f.Ext, nil
}

// MissingError is a stored object that is no longer what was stored: it
// was deleted, or replaced by other content (its ETag changed).
type MissingError struct {
	Bucket, Key string
	Status      int // HTTP status of the check, 0 when none
	Reason      string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("storage: s3://%s/%s %s", e.Bucket, e.Key, e.Reason)
}

// CopyStored copies an object stored for another request to obj's own
// destination with a server-side copy: nothing is downloaded. It copies
// only the version of from with from's ETag (CopySourceIfMatch); a
// *MissingError says it is gone or replaced (pay for the crop instead).
// Without an ETag to copy on, it first checks (HEAD) that from is there.
// The copy carries obj's own metadata, as Copy would have written it.
func (c *Copier) CopyStored(ctx context.Context, from Stored, obj Object) (Stored, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var re *awshttp.ResponseError
	if from.ETag == "" {
		_, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(from.Bucket), Key: aws.String(from.Key)})
		switch {
		case errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound:
			return Stored{}, &MissingError{Bucket: from.Bucket, Key: from.Key, Status: http.StatusNotFound, Reason: "was deleted"}
		case err != nil:
			return Stored{}, &UploadError{Op: "head", Bucket: from.Bucket, Key: from.Key, Err: err}
		}
	}
	format, ok := imageformat.ByContentType(from.ContentType)
	if !ok {
		return Stored{}, &MissingError{Bucket: from.Bucket, Key: from.Key, Reason: fmt.Sprintf("has content type %q, not an accepted image type", from.ContentType)}
	}
	bucket, key, meta, err := c.destination(obj, format.Ext)
	if err != nil {
		return Stored{}, err
	}
	cond, err := c.claim(ctx, bucket, key, obj)
	if err != nil {
		return Stored{}, err
	}
	in := &s3.CopyObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
		CopySource:        aws.String(url.PathEscape(from.Bucket) + "/" + escapeKey(from.Key)),
		MetadataDirective: types.MetadataDirectiveReplace, Metadata: meta, ContentType: aws.String(from.ContentType),
		IfNoneMatch: cond.noneMatch, IfMatch: cond.match}
	if from.ETag != "" {
		// Only the version just checked: one replaced in between is not copied.
		in.CopySourceIfMatch = aws.String(`"` + from.ETag + `"`)
	}
	out, err := c.s3.CopyObject(ctx, in)
	switch {
	case errors.As(err, &re) && re.HTTPStatusCode() == http.StatusPreconditionFailed && c.destinationChanged(ctx, bucket, key, cond):
		// The destination's condition failed, not the source's.
		return c.lostRace(ctx, Stored{Bucket: bucket, Key: key, ContentType: from.ContentType}, obj.RequestID,
			&UploadError{Op: "copy", Bucket: bucket, Key: key, Err: err})
	case errors.As(err, &re) && (re.HTTPStatusCode() == http.StatusNotFound || re.HTTPStatusCode() == http.StatusPreconditionFailed):
		// The source is gone or replaced (a missing destination bucket is
		// a 404 too, which the bucket check before paying reports).
		if berr := c.CheckBucketOf(ctx, bucket); berr != nil {
			return Stored{}, berr
		}
		reason := "was deleted"
		if re.HTTPStatusCode() == http.StatusPreconditionFailed {
			reason = "was replaced (its ETag changed)"
		}
		return Stored{}, &MissingError{Bucket: from.Bucket, Key: from.Key, Status: re.HTTPStatusCode(), Reason: reason}
	case err != nil:
		return Stored{}, &UploadError{Op: "copy", Bucket: bucket, Key: key, Err: err}
	}
	etag := from.ETag
	if out.CopyObjectResult != nil && out.CopyObjectResult.ETag != nil {
		etag = strings.Trim(aws.ToString(out.CopyObjectResult.ETag), `"`)
	}
	return Stored{Bucket: bucket, Key: key, ETag: etag, ContentType: from.ContentType, Size: from.Size}, nil
}

// CheckKey tells before paying what the write would find: a *KeyTakenError
// when another request's object is at a key obj's result would be written
// to (for any format the result may have), a *namespace.Error when the
// tenant may not write there. Only templates without {requestId} can
// render another request's key, so only those are looked at (a HEAD per
// format the template's keys differ by).
func (c *Copier) CheckKey(ctx context.Context, obj Object) error {
	tmpl := cmp.Or(obj.KeyTemplate, c.cfg.KeyTemplate)
	if strings.Contains(tmpl, "{requestId}") {
		_, _, _, err := c.destination(obj, "png") // the walls only
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	seen := map[string]bool{}
	for _, f := range imageformat.All() {
		bucket, key, _, err := c.destination(obj, f.Ext)
		if err != nil {
			return err
		}
		if seen[bucket+"/"+key] {
			continue
		}
		seen[bucket+"/"+key] = true
		if _, err := c.claim(ctx, bucket, key, obj); err != nil {
			return err
		}
	}
	return nil
}

// KeyTakenError is a destination that holds another request's object:
// cropq never writes over it (the request fails, code key_taken). Which
// request owns it is not said: it may be another tenant's default-bucket
// object reached through an operator's template.
type KeyTakenError struct{ Bucket, Key string }

func (e *KeyTakenError) Error() string {
	return fmt.Sprintf("storage: s3://%s/%s holds another request's result: cropq does not write over it (choose a key template with {requestId}, or delete the object)", e.Bucket, e.Key)
}

// condition is how a write may go: only where nothing is (If-None-Match: *)
// or over this request's own earlier write, as it was seen (If-Match).
type condition struct {
	noneMatch, match *string
}

// onComplete puts the condition on the multipart upload's completion (the
// transfer manager passes it to PutObject only, for one-part uploads).
//
//lint:ignore SA1019 see Copier.uploader
func (cond condition) onComplete(u *manager.Uploader) {
	u.ClientOptions = append(u.ClientOptions, func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Initialize.Add(middleware.InitializeMiddlewareFunc("cropqConditionalComplete",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					if c, ok := in.Parameters.(*s3.CompleteMultipartUploadInput); ok {
						c.IfNoneMatch, c.IfMatch = cond.noneMatch, cond.match
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.Before)
		})
	})
}

// claim looks at the destination before writing: nothing there, this
// request's own earlier write (a retry after a write whose record update
// was lost), or a crop of the same source (a re-sync under a fixed key
// template: the same URL and size, its bytes since replaced) may be
// written; another request's object is a *KeyTakenError. The returned
// condition makes the write fail if that changes meanwhile.
func (c *Copier) claim(ctx context.Context, bucket, key string, obj Object) (condition, error) {
	head, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	var re *awshttp.ResponseError
	switch {
	case errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound:
		return condition{noneMatch: aws.String("*")}, nil
	case err != nil:
		return condition{}, &UploadError{Op: "head", Bucket: bucket, Key: key, Err: err}
	case head.Metadata["request-id"] == obj.RequestID:
	case obj.Crop.Source != "" && head.Metadata[metaCropSource] == obj.Crop.Source:
		// The same source's crop, from an earlier run: replaced.
	default:
		return condition{}, &KeyTakenError{Bucket: bucket, Key: key}
	}
	return condition{match: head.ETag}, nil
}

// Holds reports whether obj's destination, for a result of contentType,
// already holds exactly obj's crop (the same crop key and version): a
// re-sync to the same key, with nothing to copy or write. Only templates
// without {requestId} can render a key another request wrote, so only
// those are looked at (one HEAD).
func (c *Copier) Holds(ctx context.Context, obj Object, contentType string) (Stored, bool, error) {
	format, ok := imageformat.ByContentType(contentType)
	if !ok || obj.Crop.Key == "" || obj.Crop.Version == "" || strings.Contains(cmp.Or(obj.KeyTemplate, c.cfg.KeyTemplate), "{requestId}") {
		return Stored{}, false, nil
	}
	bucket, key, _, err := c.destination(obj, format.Ext)
	if err != nil {
		return Stored{}, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	head, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	var re *awshttp.ResponseError
	switch {
	case errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound:
		return Stored{}, false, nil
	case err != nil:
		return Stored{}, false, &UploadError{Op: "head", Bucket: bucket, Key: key, Err: err}
	case head.Metadata[metaCropKey] != obj.Crop.Key || head.Metadata[metaCropVersion] != obj.Crop.Version:
		return Stored{}, false, nil
	}
	return Stored{Bucket: bucket, Key: key, ETag: strings.Trim(aws.ToString(head.ETag), `"`), ContentType: cmp.Or(aws.ToString(head.ContentType), contentType),
		Size: aws.ToInt64(head.ContentLength)}, true, nil
}

// destinationChanged reports whether the destination is no longer as claim
// saw it (a CopyObject's 412 may be the source's condition or this one).
func (c *Copier) destinationChanged(ctx context.Context, bucket, key string, cond condition) bool {
	head, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return cond.noneMatch == nil // gone, where something was
	}
	return cond.noneMatch != nil || aws.ToString(head.ETag) != aws.ToString(cond.match)
}

// lostRace answers a write refused by its condition (412): another writer
// took the key between claim and write. Another attempt of this same
// request (a rescue running beside a frozen worker) wrote the same crop: its
// object is this request's result. Anyone else's is a *KeyTakenError.
func (c *Copier) lostRace(ctx context.Context, out Stored, requestID string, err *UploadError) (Stored, error) {
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusPreconditionFailed {
		return Stored{}, err
	}
	head, herr := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(out.Bucket), Key: aws.String(out.Key)})
	switch {
	case herr != nil:
		return Stored{}, err
	case head.Metadata["request-id"] != requestID:
		return Stored{}, &KeyTakenError{Bucket: out.Bucket, Key: out.Key}
	}
	out.ETag, out.Size = strings.Trim(aws.ToString(head.ETag), `"`), aws.ToInt64(head.ContentLength)
	if ct := aws.ToString(head.ContentType); ct != "" {
		out.ContentType = ct
	}
	return out, nil
}

// escapeKey escapes an object key for CopySource, keeping its slashes.
func escapeKey(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// destination is where obj goes, and the metadata it carries: the
// request's own bucket and key template, else the copier's; cropq's own
// metadata keys win over the request's.
func (c *Copier) destination(obj Object, ext string) (bucket, key string, meta map[string]string, err error) {
	bucket, tmpl := c.cfg.Bucket, c.cfg.KeyTemplate
	if obj.Bucket != "" {
		bucket = obj.Bucket
	}
	if obj.KeyTemplate != "" {
		tmpl = obj.KeyTemplate
	}
	key, err = objectkey.Render(tmpl, objectkey.Vars{RequestID: obj.RequestID, Width: obj.Width, Height: obj.Height, Ext: ext, Date: c.cfg.Now()})
	if err != nil {
		return "", "", nil, err
	}
	// Whatever the template renders, it lands inside the tenant's walls.
	if bucket, key, err = c.cfg.Walls.Place(obj.Tenant, bucket, key); err != nil {
		return "", "", nil, err
	}
	meta = map[string]string{"request-id": obj.RequestID, "api-request-id": obj.APIRequestID,
		"width": strconv.Itoa(obj.Width), "height": strconv.Itoa(obj.Height)}
	for k, v := range map[string]string{metaCropKey: obj.Crop.Key, metaCropSource: obj.Crop.Source, metaCropVersion: obj.Crop.Version} {
		if v != "" {
			meta[k] = v
		}
	}
	for k, v := range obj.Metadata {
		// The crop-* keys are cropq's even when it sets none: a request's
		// own would grant replacement rights (claim).
		if _, taken := meta[k]; !taken && k != metaCropKey && k != metaCropSource && k != metaCropVersion {
			meta[k] = v
		}
	}
	return bucket, key, meta, nil
}
