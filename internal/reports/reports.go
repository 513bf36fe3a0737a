// Package reports writes batch reports to S3: a batch registered with a
// report destination ("s3://BUCKET/PREFIX/") has its report (records'
// StreamReport: one JSON line per request) written there once it is done,
// as PREFIX + batchId + ".jsonl", so that it outlives every TTL.
//
// One process of the fleet writes them (the feeder's leader, see Run),
// from a small set of batches awaiting a report (records.ReportsDueKey),
// not by scanning batches. The report is streamed from Redis into a
// multipart upload (the S3 transfer manager), never held whole. Once the
// object is written the batch is marked (records.ReportWrittenField) and
// leaves the set: exactly once in the normal case. A crash, or an S3
// failure, before the mark leaves the batch in the set, and its report is
// written again whole, over the same key, on a later round: idempotent.
// An incomplete multipart upload a crash leaves behind is for the
// bucket's lifecycle rule (AbortIncompleteMultipartUpload).
package reports

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cropq/cropq/internal/namespace"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/tasks"
)

// Source is what the writer needs of the status store (records.Store).
type Source interface {
	ReportsDue(ctx context.Context, n int) ([]records.BatchRef, error)
	BatchState(ctx context.Context, tenant, batchID string) (records.BatchState, error)
	WriteReport(ctx context.Context, tenant, batchID string, w io.Writer) (records.ReportStats, error)
	ReportWritten(ctx context.Context, tenant, batchID, where string) error
	ReportFailed(ctx context.Context, tenant, batchID, why string) error
	ForgetReport(ctx context.Context, tenant, batchID string) error
}

// Uploader uploads one object from a stream of unknown length, in parts
// (the S3 transfer manager's *manager.Uploader).
type Uploader interface {
	//lint:ignore SA1019 the v1 transfer manager, as results.Copier uses (see there)
	Upload(ctx context.Context, in *s3.PutObjectInput, opts ...func(*manager.Uploader)) (*manager.UploadOutput, error)
}

// Suffix ends the name of every report object: PREFIX + batchId + Suffix.
const Suffix = ".jsonl"

// Config configures a Writer. Zero values take defaults.
type Config struct {
	// Walls place a tenant's report as its results are placed
	// (namespace.Walls.Place): a tenant's report in the default bucket
	// lands under tenants/TENANT/, and it may name only its own buckets.
	Walls namespace.Walls
	// Every is how often the leader looks for reports due (default 2s).
	Every time.Duration
	// Batches bounds the batches looked at per round (default 20).
	Batches int
	// Timeout bounds the writing of one report (default 30 minutes).
	Timeout time.Duration
	// RetryCap bounds the wait before a report whose upload failed is
	// tried again (default 5 minutes; it doubles from Every).
	RetryCap time.Duration
	Logger   *slog.Logger
}

// Writer writes the reports due. Run it in every worker: only the
// feeder's leader writes.
type Writer struct {
	src Source
	up  Uploader
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	retry map[string]backoff // by batch member: failed uploads wait
}

type backoff struct {
	next time.Time
	wait time.Duration
}

// New returns a writer of src's reports through up.
func New(src Source, up Uploader, cfg Config) *Writer {
	if cfg.Every <= 0 {
		cfg.Every = 2 * time.Second
	}
	if cfg.Batches <= 0 {
		cfg.Batches = 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Minute
	}
	if cfg.RetryCap <= 0 {
		cfg.RetryCap = 5 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{src: src, up: up, cfg: cfg, log: log.With("component", "reports"), retry: map[string]backoff{}}
}

// NewUploader is the transfer manager's uploader the writer wants: parts
// of partSize bytes (at least S3's 5 MiB), one in flight, so that a
// report costs the writer about one part of memory whatever its size.
func NewUploader(client *s3.Client, partSize int64) Uploader {
	//lint:ignore SA1019 the v1 transfer manager, as results.Copier uses (see there)
	return manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = max(partSize, manager.MinUploadPartSize)
		u.Concurrency = 1
	})
}

// Run looks for reports due every Every while leader() says this process
// leads (the feeder's leadership lock), until ctx ends.
func (w *Writer) Run(ctx context.Context, leader func() bool) {
	t := time.NewTicker(w.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !leader() {
			continue
		}
		if _, err := w.WriteDue(ctx); err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "reports: a report could not be written; it is tried again", "err", err)
		}
	}
}

// WriteDue writes the reports of the batches due that are done, and
// returns how many it wrote.
func (w *Writer) WriteDue(ctx context.Context) (int, error) {
	refs, err := w.src.ReportsDue(ctx, w.cfg.Batches)
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, ref := range refs {
		member := ref.Tenant + "/" + ref.BatchID
		w.mu.Lock()
		b := w.retry[member]
		w.mu.Unlock()
		if time.Now().Before(b.next) {
			continue
		}
		wrote, err := w.writeOne(ctx, ref.Tenant, ref.BatchID)
		if wrote {
			n++
		}
		w.mu.Lock()
		if err != nil {
			b.wait = min(max(2*b.wait, w.cfg.Every), w.cfg.RetryCap)
			w.retry[member] = backoff{next: time.Now().Add(b.wait), wait: b.wait}
			errs = append(errs, fmt.Errorf("batch %s: %w", member, err))
		} else {
			delete(w.retry, member)
		}
		w.mu.Unlock()
	}
	return n, errors.Join(errs...)
}

// writeOne writes one batch's report if it is done; wrote says it did.
func (w *Writer) writeOne(ctx context.Context, tenant, batchID string) (wrote bool, err error) {
	b, err := w.src.BatchState(ctx, tenant, batchID)
	if err != nil {
		return false, err
	}
	switch {
	case b.Report == "":
		// Its keys expired (or were never there): nothing to write from.
		w.log.ErrorContext(ctx, "reports: a batch awaiting its report is gone", "tenant", tenant, "batch_id", batchID)
		return false, w.src.ForgetReport(ctx, tenant, batchID)
	case b.ReportWritten != "" || b.ReportError != "":
		return false, w.src.ForgetReport(ctx, tenant, batchID)
	case !b.Done():
		return false, nil // still running, or reading its manifest
	}
	bucket, key, err := Place(w.cfg.Walls, tenant, batchID, b.Report)
	if err != nil {
		// Never writable there: said once, on the batch, not retried.
		w.log.ErrorContext(ctx, "reports: the report destination cannot be used", "tenant", tenant, "batch_id", batchID, "err", err)
		return false, w.src.ReportFailed(ctx, tenant, batchID, err.Error())
	}
	lines, err := w.upload(ctx, tenant, batchID, bucket, key)
	var re *awshttp.ResponseError
	switch {
	case errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound:
		// A PUT's 404 is a bucket that does not exist: not retried.
		w.log.ErrorContext(ctx, "reports: the report's bucket does not exist", "tenant", tenant, "batch_id", batchID, "bucket", bucket)
		return false, w.src.ReportFailed(ctx, tenant, batchID, fmt.Sprintf("bucket %s does not exist", bucket))
	case err != nil:
		return false, err
	}
	where := "s3://" + bucket + "/" + key
	if err := w.src.ReportWritten(ctx, tenant, batchID, where); err != nil {
		return true, err // written; marked on a later round (written again)
	}
	w.log.InfoContext(ctx, "reports: written", "tenant", tenant, "batch_id", batchID, "object", where, "lines", lines)
	return true, nil
}

// upload streams the report into the object: the report is read from
// Redis into a pipe the uploader reads parts from. Any failure on either
// side aborts the upload, leaving no object (or the previous one).
func (w *Writer) upload(ctx context.Context, tenant, batchID, bucket, key string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	pr, pw := io.Pipe()
	var stats records.ReportStats
	done := make(chan error, 1)
	go func() {
		var err error
		stats, err = w.src.WriteReport(ctx, tenant, batchID, pw)
		pw.CloseWithError(err) // nil: the end of the body
		done <- err
	}()
	_, err := w.up.Upload(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: pr,
		ContentType: aws.String("application/x-ndjson")})
	pr.CloseWithError(errors.New("reports: upload ended")) // unblocks the reader's side if the upload stopped first
	rerr := <-done
	if err != nil {
		return 0, fmt.Errorf("upload s3://%s/%s: %w", bucket, key, err)
	}
	if rerr != nil {
		return 0, fmt.Errorf("read report: %w", rerr)
	}
	return stats.Lines, nil
}

// DestinationError is a report destination that cannot be used; Field is
// "report".
type DestinationError struct {
	Field, Value, Reason string
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

// ParseDestination reads a report destination, "s3://BUCKET/PREFIX/" (the
// prefix may be empty: "s3://BUCKET/"); an error is a *DestinationError.
func ParseDestination(dest string) (bucket, prefix string, err error) {
	bad := func(reason string) error { return &DestinationError{Field: "report", Value: dest, Reason: reason} }
	rest, ok := strings.CutPrefix(dest, "s3://")
	if !ok {
		return "", "", bad("must be s3://BUCKET/PREFIX/")
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	switch {
	case bucket == "":
		return "", "", bad("names no bucket (s3://BUCKET/PREFIX/)")
	case prefix != "" && !strings.HasSuffix(prefix, "/"):
		return "", "", bad("the prefix must end with / (reports are PREFIX + batchId + .jsonl)")
	case strings.Contains(prefix, "//") || strings.HasPrefix(prefix, "/"):
		return "", "", bad("the prefix has an empty path segment")
	case len(prefix) > 512:
		return "", "", bad("the prefix must be at most 512 bytes")
	}
	return bucket, prefix, nil
}

// Place is where a tenant's batch's report goes for the destination dest:
// PREFIX + batchId + Suffix in BUCKET, placed by the tenant's walls as a
// result would be. A destination the tenant may not use is an error.
func Place(walls namespace.Walls, tenant, batchID, dest string) (bucket, key string, err error) {
	if tenant == "" {
		tenant = tasks.DefaultTenant
	}
	b, prefix, err := ParseDestination(dest)
	if err != nil {
		return "", "", err
	}
	bucket, key, err = walls.Place(tenant, b, prefix+batchID+Suffix)
	if err != nil {
		return "", "", fmt.Errorf("report %q: %w", dest, err)
	}
	return bucket, key, nil
}
