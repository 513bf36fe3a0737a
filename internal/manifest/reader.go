// Package manifest reads the manifests of manifest batches (producer's
// RegisterManifest): objects in S3 with the lines of `cropq enqueue
// --file`, read in byte ranges as the backlog needs requests, never loaded
// whole.
//
// The fleet's feeder leader runs Reader.Refill each tick. For each batch
// being read it keeps about Target of the batch's requests queued: it reads
// lines from the batch's cursor (a byte offset and a line number in its
// descriptor, records.Manifest), creates a request per good line through
// the producer's create path (record, idempotency, dedup, lanes, tenant
// shares, exactly as a bulk file), refuses each bad line alone
// (records.Store.RefuseLine: failed in the batch's counts and its
// report), and only then moves the cursor past them. A crash in between
// reads those lines again: requests are created once per request id and a
// line is refused once, so nothing is created or reported twice. Redis
// holds the cursor and the requests fed, never the lines waiting.
package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/requestfile"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Objects reads a manifest's bytes (S3).
type Objects interface {
	// GetRange reads n bytes from off of the object while its ETag is
	// etag: ErrChanged or ErrGone when it is not.
	GetRange(ctx context.Context, bucket, key, etag string, off, n int64) ([]byte, error)
}

// Creator creates the requests of good lines (producer.Producer).
type Creator interface {
	EnqueueLines(ctx context.Context, reqs []tasks.Request, lines []int64) []producer.Result
}

// Codes of the lines and manifests the reader refuses.
const (
	CodeBadLine     = "bad_line"         // a line that is no valid request
	CodeConflict    = "conflict"         // a request id used already with other parameters
	CodeChanged     = "manifest_changed" // the object's ETag is not the one pinned
	CodeGone        = "manifest_gone"    // the object was removed
	CodeBadHeader   = "bad_header"       // a CSV header that cannot be read
	CodeLineTooLong = "line_too_long"    // a line longer than requestfile.MaxLineBytes
)

// Defaults of Config.
const (
	DefaultTarget     = 2000
	DefaultChunkBytes = 1 << 20
	DefaultGroup      = 2000
	DefaultParallel   = 4
)

// Config configures a Reader. Zero values take defaults.
type Config struct {
	// Target is how many of a manifest batch's requests are kept queued
	// (default 2,000): enough that the feeder never waits for lines, few
	// enough that Redis holds a bounded part of any manifest.
	Target int
	// ChunkBytes is the byte range read at a time (default 1 MiB).
	ChunkBytes int64
	// Group is the lines read between two moves of the cursor (default
	// 2,000), created Parallel parts at a time (default 4).
	Group, Parallel int
	// MinBackoff and MaxBackoff bound the wait after S3 or Redis failed
	// (default 1s, 30s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// TracerProvider, when on, gives each group of lines read a "read
	// manifest" span, linked to the manifest's registration; the group's
	// "publish" span and so its requests' traces are under it.
	TracerProvider trace.TracerProvider
}

// Reader reads every manifest being read; one at a time in the fleet (the
// feeder's leader) calls Refill.
type Reader struct {
	store   *records.Store
	objects Objects
	create  Creator
	cfg     Config
	log     *slog.Logger

	tracer trace.Tracer // nil with tracing off

	mu      sync.Mutex
	backoff map[string]backoff // per "tenant/batch"
}

type backoff struct {
	until time.Time
	wait  time.Duration
}

// NewReader returns a reader of the manifests of store.
func NewReader(store *records.Store, objects Objects, create Creator, cfg Config) *Reader {
	if cfg.Target <= 0 {
		cfg.Target = DefaultTarget
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	if cfg.Group <= 0 {
		cfg.Group = DefaultGroup
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reader{store: store, objects: objects, create: create, cfg: cfg, log: log.With("component", "manifest"), backoff: map[string]backoff{},
		tracer: tracing.TracerIfOn(cfg.TracerProvider)}
}

// Refill tops up the queued requests of every manifest batch being read.
// A manifest whose object or Redis failed is retried after a backoff; the
// others go on.
func (r *Reader) Refill(ctx context.Context) error {
	batches, err := r.store.ReadingManifests(ctx)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	var errs []error
	for _, b := range batches {
		name := b[0] + "/" + b[1]
		if !r.due(name) {
			continue
		}
		_, err := r.Read(ctx, b[0], b[1], 0)
		r.settle(name, err)
		if err != nil && ctx.Err() == nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Reader) due(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Now().After(r.backoff[name].until)
}

func (r *Reader) settle(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.backoff, name)
		return
	}
	b := r.backoff[name]
	b.wait = min(max(2*b.wait, r.cfg.MinBackoff), r.cfg.MaxBackoff)
	b.until = time.Now().Add(b.wait)
	r.backoff[name] = b
}

// Read reads lines of a tenant's manifest batch until about Target of its
// requests are queued, or, when upTo > 0, exactly up to upTo request lines
// whatever is queued (the benchmark's). It returns the request lines it
// read.
func (r *Reader) Read(ctx context.Context, tenant, batchID string, upTo int) (int, error) {
	m, ok, err := r.store.Manifest(ctx, tenant, batchID)
	switch {
	case err != nil:
		return 0, err
	case !ok, m.State != records.ManifestReading:
		// Gone, or its reading ended (a crash after the descriptor was
		// saved, before it left the set).
		return 0, r.store.ForgetManifest(ctx, tenant, batchID)
	}
	need := upTo
	if need <= 0 {
		counts, err := r.store.BatchCounts(ctx, tenant, batchID)
		if err != nil {
			return 0, err
		}
		// Requests fed into asynq are still queued: they count, so that
		// the backlog holds a bounded part of the manifest.
		need = r.cfg.Target - int(counts[status.Queued])
		if need < min(r.cfg.Group, r.cfg.Target/4) {
			return 0, nil
		}
	}
	read := 0
	var buf []byte // bytes of the object from m.Offset
	chunk := r.cfg.ChunkBytes
	for need > 0 && m.State == records.ManifestReading {
		if m.Offset >= m.Size && len(buf) == 0 {
			m.State, m.Total = records.ManifestDone, m.Read
			return read, r.store.SaveManifest(ctx, m)
		}
		// Complete lines only; at the object's end the last one too.
		atEnd := m.Offset+int64(len(buf)) >= m.Size
		end := len(buf)
		if !atEnd {
			end = bytes.LastIndexByte(buf, '\n') + 1
		}
		if end == 0 {
			if int64(len(buf)) > requestfile.MaxLineBytes {
				return read, r.stop(ctx, &m, CodeLineTooLong, fmt.Sprintf("line %d is longer than %d bytes", m.Line+1, requestfile.MaxLineBytes))
			}
			n := min(chunk, m.Size-m.Offset-int64(len(buf)))
			b, err := r.objects.GetRange(ctx, m.Bucket, m.Key, m.ETag, m.Offset+int64(len(buf)), n)
			switch {
			case errors.Is(err, ErrChanged):
				return read, r.stop(ctx, &m, CodeChanged, fmt.Sprintf("%s changed since it was registered (ETag %s); %d lines were read; register the new version as another batch", m.URL(), m.ETag, m.Read))
			case errors.Is(err, ErrGone):
				return read, r.stop(ctx, &m, CodeGone, fmt.Sprintf("%s was removed; %d lines were read", m.URL(), m.Read))
			case err != nil:
				return read, fmt.Errorf("manifest %s: %w", m.URL(), err)
			}
			if int64(len(buf)) >= chunk {
				chunk *= 2 // a line longer than a chunk
			}
			buf = append(buf, b...)
			continue
		}
		gctx, span := r.groupSpan(ctx, m)
		n, used, err := r.lines(gctx, &m, buf[:end], min(need, r.cfg.Group))
		endGroupSpan(span, n, err)
		if err != nil || m.State != records.ManifestReading {
			return read, err
		}
		read += n
		need -= n
		m.Offset += int64(used)
		buf = buf[used:]
		if err := r.store.SaveManifest(ctx, m); err != nil {
			return read, err
		}
	}
	return read, nil
}

// SpanRead is the span of one group of a manifest's lines read.
const SpanRead = "read manifest"

// groupSpan starts the span of one group of lines: a trace of its own (a
// manifest's lines are read over days), linked to the registration's.
func (r *Reader) groupSpan(ctx context.Context, m records.Manifest) (context.Context, trace.Span) {
	if r.tracer == nil {
		return ctx, nil
	}
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithAttributes(
		tracing.Batch.String(m.BatchID), tracing.Tenant.String(m.Tenant), attribute.Int64("cropq.manifest.first_line", m.Line+1))}
	if sc, err := tracing.Parse(m.Traceparent); err == nil {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return r.tracer.Start(ctx, SpanRead, opts...)
}

// endGroupSpan records how many lines the group read, or why it failed.
func endGroupSpan(span trace.Span, n int, err error) {
	if span == nil {
		return
	}
	span.SetAttributes(tracing.MessagingBatchLen.Int(n))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// stop ends a manifest's reading with a code.
func (r *Reader) stop(ctx context.Context, m *records.Manifest, code, msg string) error {
	m.State, m.Code, m.Message = records.ManifestStopped, code, msg
	r.log.WarnContext(ctx, "manifest: reading stopped", "batch_id", m.BatchID, "tenant", m.Tenant, "code", code, "reason", msg)
	return r.store.SaveManifest(ctx, *m)
}

// refusal is a line that is no request.
type refusal struct {
	line int64
	id   string
	code string
	err  error
}

// lines reads up to limit request lines of text (complete lines), creates
// the good ones and refuses the bad ones, and advances m past them (Line,
// Read, Header; the caller moves Offset by used and saves).
func (r *Reader) lines(ctx context.Context, m *records.Manifest, text []byte, limit int) (n, used int, err error) {
	var header requestfile.Header
	if m.Format == string(requestfile.CSV) && m.Header != nil {
		if header, err = requestfile.ParseHeader(m.Header); err != nil {
			return 0, 0, r.stop(ctx, m, CodeBadHeader, err.Error())
		}
	}
	// The lines, in order (the header first, when it is among them).
	type raw struct {
		line int64
		text []byte
	}
	var raws []raw
	line, pos := m.Line, 0
	for pos < len(text) && n < limit {
		rest := text[pos:]
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			rest = rest[:i+1]
		}
		pos += len(rest)
		line++
		t := bytes.TrimSpace(rest)
		if len(t) == 0 {
			continue
		}
		if m.Format == string(requestfile.CSV) && m.Header == nil {
			h, herr := requestfile.ParseCSVHeaderLine(t)
			if herr != nil {
				return 0, 0, r.stop(ctx, m, CodeBadHeader, fmt.Sprintf("line %d: %v", line, herr))
			}
			header, m.Header = h, h.Names
			continue
		}
		n++
		raws = append(raws, raw{line, t})
	}
	// Parsed and created Parallel parts at a time: the parsing takes the
	// cores, the creation Redis, and each waits less on the other.
	parts := r.cfg.Parallel
	size := (len(raws) + parts - 1) / max(parts, 1)
	refusedOf := make([][]refusal, parts)
	errOf := make([]error, parts)
	var wg sync.WaitGroup
	for k := 0; k < parts && k*size < len(raws); k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var reqs []tasks.Request
			var lines []int64
			for _, x := range raws[k*size : min((k+1)*size, len(raws))] {
				var req tasks.Request
				var perr error
				if m.Format == string(requestfile.CSV) {
					req, perr = header.ParseCSVLine(x.text)
				} else {
					req, perr = requestfile.ParseJSON(x.text)
				}
				if perr == nil {
					perr = r.claim(&req, *m)
				}
				if perr != nil {
					refusedOf[k] = append(refusedOf[k], refusal{line: x.line, id: req.RequestID, code: CodeBadLine, err: perr})
					continue
				}
				reqs = append(reqs, req)
				lines = append(lines, x.line)
			}
			if len(reqs) == 0 {
				return
			}
			for i, res := range r.create.EnqueueLines(ctx, reqs, lines) {
				switch res.Outcome {
				case producer.Enqueued, producer.Known:
				case producer.Invalid:
					refusedOf[k] = append(refusedOf[k], refusal{line: lines[i], id: res.RequestID, code: CodeBadLine, err: res.Err})
				case producer.Conflict:
					refusedOf[k] = append(refusedOf[k], refusal{line: lines[i], id: res.RequestID, code: CodeConflict, err: res.Err})
				default:
					// Redis or S3 failed: the cursor stays, the lines are
					// read again (what was created is known then).
					errOf[k] = fmt.Errorf("manifest %s, line %d: %w", m.URL(), lines[i], res.Err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errOf...); err != nil {
		return 0, 0, err
	}
	refused := slices.Concat(refusedOf...)
	slices.SortFunc(refused, func(a, b refusal) int { return int(a.line - b.line) })
	for _, f := range refused {
		msg := fmt.Sprintf("line %d: %v", f.line, f.err)
		if _, err := r.store.RefuseLine(ctx, m.Tenant, m.BatchID, records.ReportLine{RequestID: f.id, Line: f.line, Code: f.code, Message: msg}); err != nil {
			return 0, 0, err
		}
	}
	m.Line, m.Read = line, m.Read+int64(n)
	return n, pos, nil
}

// claim gives a line the manifest's batch, tenant and default lane; a line
// naming another batch or tenant is refused, naming the field.
func (r *Reader) claim(req *tasks.Request, m records.Manifest) error {
	switch {
	case req.BatchID != "" && req.BatchID != m.BatchID:
		return &cropapi.ValidationError{Field: "batchId", Reason: fmt.Sprintf("is %q: a manifest's lines are its batch's (%s)", req.BatchID, m.BatchID)}
	case req.Tenant != "" && req.EffectiveTenant() != m.Tenant:
		return &cropapi.ValidationError{Field: "tenant", Reason: fmt.Sprintf("is %q: the manifest is tenant %s's", req.Tenant, m.Tenant)}
	}
	req.BatchID = m.BatchID
	if req.Priority == "" {
		req.Priority = m.Priority
	}
	if m.Tenant != tasks.DefaultTenant {
		req.Tenant = m.Tenant
	} else {
		req.Tenant = ""
	}
	return nil
}
