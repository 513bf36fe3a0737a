package producer

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/requestfile"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/tasks"
)

// ManifestRequest registers a batch fed from a manifest: a JSONL or CSV
// object in S3 with the columns of `cropq enqueue --file`, read as the
// fleet's feeder needs lines (package manifest), never loaded whole.
type ManifestRequest struct {
	// BatchID names the batch; "" derives it from the object's key.
	BatchID string `json:"batchId,omitempty" strictjson:"nonempty"`
	// Manifest is "s3://BUCKET/KEY" (.jsonl, .ndjson or .csv).
	Manifest string `json:"manifest" strictjson:"nonempty"`
	// Priority is the lane of lines that name none (default normal).
	Priority string `json:"priority,omitempty" strictjson:"nonempty"`
	// Report, when set, is where the batch's report is written when it is
	// done: "s3://BUCKET/PREFIX/".
	Report string `json:"report,omitempty" strictjson:"nonempty"`
}

// ObjectInfo is what registration pins of a manifest's object.
type ObjectInfo struct {
	ETag string
	Size int64
}

// ManifestObjects heads a manifest's object; an object that does not
// exist is an error wrapping ErrNoObject.
type ManifestObjects interface {
	Head(ctx context.Context, bucket, key string) (ObjectInfo, error)
}

// ErrNoObject is a manifest object that does not exist.
var ErrNoObject = errors.New("no such object")

// ReadWalls says which buckets and prefixes a tenant may name as a
// manifest or a report destination (namespace.Walls): an error naming
// field when it may not.
type ReadWalls interface {
	CheckPlace(tenant, bucket, key, field string) error
}

// BatchExistsError is a batch id taken by another manifest or by a batch
// of requests.
type BatchExistsError struct{ BatchID string }

func (e *BatchExistsError) Error() string {
	return fmt.Sprintf("producer: batch %s exists already with other requests or another manifest: choose another batchId", e.BatchID)
}

// RegisterManifest registers a tenant's manifest batch ("" is the default
// tenant) and returns it: the object is headed and its ETag and size
// pinned (a manifest changed mid-read stops the batch, rather than mix two
// versions), and the batch waits for the feeder to read it. The same
// registration again returns the batch as it is. Invalid input is a
// *cropapi.ValidationError naming the field, a taken batch id a
// *BatchExistsError.
func (p *Producer) RegisterManifest(ctx context.Context, tenant string, req ManifestRequest) (BatchInfo, error) {
	if tenant == "" {
		tenant = tasks.DefaultTenant
	}
	bucket, key, err := ParseS3URL(req.Manifest)
	if err != nil {
		return BatchInfo{}, &cropapi.ValidationError{Field: "manifest", Reason: err.Error()}
	}
	if key == "" || strings.HasSuffix(key, "/") {
		return BatchInfo{}, &cropapi.ValidationError{Field: "manifest", Reason: fmt.Sprintf("%q names no object: want s3://BUCKET/KEY", req.Manifest)}
	}
	format, err := requestfile.FormatOf(key)
	if err != nil {
		return BatchInfo{}, &cropapi.ValidationError{Field: "manifest", Reason: "want a .jsonl, .ndjson or .csv object"}
	}
	if err := (tasks.Params{Priority: req.Priority}).ValidateDefaults(); err != nil {
		return BatchInfo{}, err
	}
	if req.BatchID == "" {
		req.BatchID = BatchIDOf(key)
	}
	if err := tasks.ValidateBatchID(req.BatchID); err != nil {
		return BatchInfo{}, err
	}
	if req.Report != "" {
		rb, prefix, err := ParseS3URL(req.Report)
		if err == nil && prefix != "" && !strings.HasSuffix(prefix, "/") {
			err = errors.New("must end with / (a prefix the report is written under)")
		}
		if err != nil {
			return BatchInfo{}, &cropapi.ValidationError{Field: "report", Reason: fmt.Sprintf("%v: want s3://BUCKET/PREFIX/", err)}
		}
		if p.cfg.ReadWalls != nil {
			if err := p.cfg.ReadWalls.CheckPlace(tenant, rb, prefix, "report"); err != nil {
				return BatchInfo{}, err
			}
		}
	}
	if p.cfg.ReadWalls != nil {
		if err := p.cfg.ReadWalls.CheckPlace(tenant, bucket, key, "manifest"); err != nil {
			return BatchInfo{}, err
		}
	}
	if p.cfg.Manifests == nil {
		return BatchInfo{}, errors.New("producer: manifests are not configured (Config.Manifests)")
	}
	obj, err := p.cfg.Manifests.Head(ctx, bucket, key)
	switch {
	case errors.Is(err, ErrNoObject):
		return BatchInfo{}, &cropapi.ValidationError{Field: "manifest", Reason: fmt.Sprintf("no object %s", req.Manifest)}
	case err != nil:
		return BatchInfo{}, fmt.Errorf("producer: head manifest %s: %w", req.Manifest, err)
	}
	m := records.Manifest{Tenant: tenant, BatchID: req.BatchID, Bucket: bucket, Key: key, ETag: obj.ETag, Size: obj.Size,
		Format: string(format), Priority: req.Priority}
	if p.tracer != nil {
		m.Traceparent = tracing.Traceparent(ctx)
	}
	if _, _, err := p.statuses.RegisterManifest(ctx, m, req.Report); err != nil {
		if errors.Is(err, records.ErrBatchExists) {
			return BatchInfo{}, &BatchExistsError{BatchID: req.BatchID}
		}
		return BatchInfo{}, fmt.Errorf("producer: %w", err)
	}
	return p.Batch(ctx, tenantKey(tenant), req.BatchID)
}

// tenantKey is how the store names a tenant's batches ("" for the default).
func tenantKey(tenant string) string {
	if tenant == tasks.DefaultTenant {
		return ""
	}
	return tenant
}

// ParseS3URL splits "s3://bucket/key" (key may be empty).
func ParseS3URL(s string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3:// URL", s)
	}
	bucket, key, _ = strings.Cut(rest, "/")
	if !bucketPattern.MatchString(bucket) {
		return "", "", fmt.Errorf("%q names no valid bucket", s)
	}
	return bucket, key, nil
}

var bucketPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// BatchIDOf derives a batch id from a manifest's key: its base name
// without extension, reduced to the characters batch ids take.
func BatchIDOf(key string) string {
	base := path.Base(key)
	if i := strings.IndexByte(base, '.'); i > 0 {
		base = base[:i]
	}
	b := []byte(base)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == ':') {
			b[i] = '-'
		}
	}
	id := strings.TrimLeft(string(b), "-_:")
	if len(id) > tasks.MaxRequestIDLen {
		id = id[:tasks.MaxRequestIDLen]
	}
	if id == "" {
		id = "manifest"
	}
	return id
}

// ManifestInfo is how far a batch's manifest was read.
type ManifestInfo struct {
	URL   string
	ETag  string
	Size  int64
	State string // reading, done or stopped
	// Code and Message say why reading stopped.
	Code, Message string
	// Lines are the request lines read so far; Total is their number once
	// the manifest was read to its end (0 before).
	Lines, Total int64
	// Offset is the bytes read.
	Offset int64
}

// manifestInfo fills bi from a batch's manifest: not done while lines are
// left to read, whose number is estimated from the bytes left.
func manifestInfo(bi *BatchInfo, m records.Manifest) {
	bi.Manifest = &ManifestInfo{URL: m.URL(), ETag: m.ETag, Size: m.Size, State: m.State, Code: m.Code, Message: m.Message,
		Lines: m.Read, Total: m.Total, Offset: m.Offset}
	if m.State == records.ManifestDone {
		bi.Total = max(bi.Total, m.Total)
	}
	if m.State != records.ManifestReading {
		return
	}
	bi.Done = false
	if bi.Priority == "" {
		bi.Priority = m.Priority
	}
	unread := int64(1) // unknown, but not none
	if m.Read > 0 && m.Offset > 0 {
		unread = int64(float64(m.Size-m.Offset) * float64(m.Read) / float64(m.Offset))
	}
	bi.Total += unread
	bi.Remaining += unread
}
