// Package producer is how an ingestion pipeline written in Go submits crops:
// it validates each request (the API's own rules, so no paid call is wasted),
// records its "queued" status and enqueues its task in one step, keeps large
// base64 images out of Redis (a claim check in S3), and does many requests in
// a few Redis round trips.
//
// The request id is the idempotency key: the same id with the same
// parameters answers the existing record, with different parameters a
// conflict, and in neither case is anything enqueued or paid for again.
package producer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

// InputStore keeps claim-checked images (storage.Inputs).
type InputStore interface {
	Put(ctx context.Context, requestID string, data []byte) (storage.Input, error)
	Delete(ctx context.Context, ref storage.Input) error
}

// Notifier tells a request's callback URL about its terminal state (the
// worker's webhook notifier); Cancel uses it for canceled requests.
type Notifier interface {
	Notify(ctx context.Context, callbackURL string, rec status.Record) error
}

// DefaultClaimCheckBytes is Config.ClaimCheckBytes's default: larger
// images go to the input store, not Redis.
const DefaultClaimCheckBytes = 256 << 10

// Config configures a Producer. Zero values take defaults.
type Config struct {
	// Task are the asynq options of every crop task (queue, retries, …);
	// Task.Limits are the API's input rules.
	Task   tasks.Options
	Status status.Config
	// Inputs, when set, receives base64 images longer than ClaimCheckBytes
	// (default 256 KiB of base64), and the task carries their reference.
	// Without it such images travel in the payload, in Redis memory.
	Inputs          InputStore
	ClaimCheckBytes int
	// Concurrency bounds the enqueues of one batch in flight (default 16).
	Concurrency int
	// Backlog, when true, makes accepted requests wait in the fleet's
	// backlog: each is recorded and appended to its
	// (priority lane, tenant) list in one step, under Status.Prefix, and the
	// fleet's feeder moves it into asynq by priority and tenant share.
	// Without it, requests are enqueued into asynq at once, FIFO.
	Backlog bool
	// Weights and Rate let Batch estimate when a batch will be done: the
	// tenants' weights (CROPQ_TENANT_WEIGHTS) and the fleet's effective
	// rate in calls per second. Without Rate there is no estimate.
	Weights map[string]int
	Rate    func(ctx context.Context) (float64, error)
	// Budgets, when set, lets Batch say that a batch waits for its
	// tenant's budget of paid calls (CROPQ_TENANT_BUDGETS), and when it
	// will move.
	Budgets Budgets
	// Notifier, when set, is told of requests canceled through Cancel that
	// have a callback URL; the worker reports every other terminal state.
	Notifier Notifier
	// Manifests heads manifest objects for RegisterManifest (without it,
	// manifests are refused); ReadWalls, when set, says which buckets and
	// prefixes a tenant may name as a manifest or report destination.
	Manifests ManifestObjects
	ReadWalls ReadWalls
	// TracerProvider makes a "publish crops" PRODUCER span of each call
	// that accepts requests, and stores its trace context (traceparent,
	// 55 bytes) in their records and payloads, so that the workers' spans
	// join the trace. Nil: no spans, nothing stored.
	TracerProvider trace.TracerProvider
	// Logger receives what the producer cannot return as an error, such as
	// a claim-checked input it failed to remove (default: discarded).
	Logger *slog.Logger
}

// Budgets tells when a tenant's budget of paid calls has room for more
// calls (package budget's Budgets.Until).
type Budgets interface {
	Until(ctx context.Context, tenant string, calls int64) (at time.Time, exhausted, ok bool, err error)
}

// WaitingForBudget is BatchInfo.Waiting for a batch whose tenant spent its
// budget of paid calls for the period.
const WaitingForBudget = "budget"

// Outcome is what happened to one request.
type Outcome string

const (
	Enqueued Outcome = "enqueued" // recorded as queued and enqueued
	Known    Outcome = "known"    // the id exists with the same parameters: nothing done
	Conflict Outcome = "conflict" // the id exists with different parameters: nothing done
	Invalid  Outcome = "invalid"  // refused by validation: nothing done
	Error    Outcome = "error"    // Redis or S3 failed: nothing left half-done (record, batch count, input)
)

// Result is the outcome of one request.
type Result struct {
	RequestID string
	Outcome   Outcome
	// Record is the status record after the call (for Known and Conflict,
	// the existing one).
	Record status.Record
	// Err is set for Conflict (*ConflictError), Invalid
	// (*cropapi.ValidationError) and Error.
	Err error
}

// ConflictError is a request id already used with other parameters.
type ConflictError struct {
	RequestID string
	Field     string // the first parameter that differs
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("producer: request id %s is already used with a different %s", e.RequestID, e.Field)
}

// Producer is safe for concurrent use.
type Producer struct {
	rdb      redis.UniversalClient
	cfg      Config
	client   *asynq.Client
	insp     *asynq.Inspector
	statuses *records.Store
	backlog  *backlog.Backlog // nil without Config.Backlog
	tracer   trace.Tracer     // nil with tracing off
}

// New returns a producer on rdb, which the caller owns.
func New(rdb redis.UniversalClient, cfg Config) *Producer {
	if cfg.Task.Queue == "" {
		cfg.Task.Queue = tasks.DefaultQueue
	}
	if cfg.ClaimCheckBytes <= 0 {
		cfg.ClaimCheckBytes = DefaultClaimCheckBytes
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Producer{
		rdb:      rdb,
		cfg:      cfg,
		client:   asynq.NewClientFromRedisClient(rdb),
		insp:     asynq.NewInspectorFromRedisClient(rdb),
		statuses: records.NewStore(rdb, cfg.Status),
		tracer:   tracing.TracerIfOn(cfg.TracerProvider),
	}
	if cfg.Backlog {
		p.backlog = backlog.New(rdb, backlog.Config{Prefix: cfg.Status.Prefix})
	}
	return p
}

// Close releases what the producer holds. Its asynq client and inspector
// share the Redis client, which the caller owns and closes: there is
// nothing of theirs to release (asynq's Close of a shared connection only
// answers that it cannot), so Close succeeds.
func (p *Producer) Close() error { return nil }

// Enqueue submits one request.
func (p *Producer) Enqueue(ctx context.Context, req tasks.Request) Result {
	return p.EnqueueBatch(ctx, []tasks.Request{req})[0]
}

// item is one request on its way through a batch.
type item struct {
	req    tasks.CropPayload
	first  *item // an earlier item of the same batch with the same id
	rec    status.Record
	raw    []byte // decoded base64 image, when claim-checked
	res    Result
	create bool // its record was created by this call
}

// EnqueueBatch submits many requests: one pipelined round trip creates the
// status records, then the new ones are enqueued Concurrency at a time.
// Results are in the order of reqs.
func (p *Producer) EnqueueBatch(ctx context.Context, reqs []tasks.Request) []Result {
	return p.enqueueBatch(ctx, reqs, nil)
}

// EnqueueLines is EnqueueBatch for the lines of a manifest batch: each
// record names its line (lines[i], 1-based) in the manifest.
func (p *Producer) EnqueueLines(ctx context.Context, reqs []tasks.Request, lines []int64) []Result {
	return p.enqueueBatch(ctx, reqs, lines)
}

func (p *Producer) enqueueBatch(ctx context.Context, reqs []tasks.Request, lines []int64) []Result {
	if p.tracer == nil {
		return p.accept(ctx, reqs, lines, "")
	}
	// A manifest's lines are published a group at a time (one span), and
	// only the lines read carry its context: unread lines cost nothing,
	// and the registration's context is kept once, on the batch.
	ctx, span := p.publishSpan(ctx, reqs)
	defer span.End()
	res := p.accept(ctx, reqs, lines, tracing.Traceparent(ctx))
	endPublishSpan(span, res)
	return res
}

// accept is enqueueBatch, its records and payloads carrying traceparent.
func (p *Producer) accept(ctx context.Context, reqs []tasks.Request, lines []int64, traceparent string) []Result {
	items := make([]*item, len(reqs))
	var pending []*item
	now := time.Now().UTC()
	byID := make(map[string]*item, len(reqs))
	for i, req := range reqs {
		it := &item{req: tasks.CropPayload{Version: tasks.PayloadVersion, Request: req, EnqueuedAt: now, Traceparent: traceparent}, res: Result{RequestID: req.RequestID}}
		items[i] = it
		if err := req.Validate(p.cfg.Task.Rules()); err != nil {
			it.res.Outcome, it.res.Err = Invalid, err
			continue
		}
		digest := ""
		if req.ImageBase64 != "" {
			raw, err := decodeBase64(req.ImageBase64)
			if err != nil { // Validate decoded it already; kept for safety
				it.res.Outcome, it.res.Err = Invalid, &cropapi.ValidationError{Field: "imageBase64", Reason: "is not valid base64"}
				continue
			}
			sum := sha256.Sum256(raw)
			digest = hex.EncodeToString(sum[:])
			if p.cfg.Inputs != nil && len(req.ImageBase64) > p.cfg.ClaimCheckBytes {
				it.raw = raw
			}
		}
		it.rec = status.Record{RequestID: req.RequestID, Params: req.Params.Effective(), Source: it.req.Source(), SourceURL: req.ImageURL,
			SourceDigest: digest, Fingerprint: req.Fingerprint(digest), Traceparent: traceparent}
		if lines != nil {
			it.rec.Line = lines[i]
		}
		// The same id twice in one call: the first goes through, the others
		// follow its outcome (one record, one task, whatever the timing).
		if first := byID[req.RequestID]; first != nil {
			it.first, it.raw = first, nil
			continue
		}
		byID[req.RequestID] = it
		pending = append(pending, it)
	}
	if len(pending) == 0 {
		return results(items)
	}

	if p.backlog != nil {
		p.admit(ctx, pending)
		return results(items)
	}
	recs := make([]status.Record, len(pending))
	for i, it := range pending {
		recs[i] = it.rec
	}
	created, err := p.statuses.CreateMany(ctx, recs)
	if err != nil {
		for _, it := range pending {
			it.res.Outcome, it.res.Err = Error, err
		}
		return results(items)
	}
	var toEnqueue []*item
	for i, it := range pending {
		c := created[i]
		switch {
		case c.Err != nil:
			it.res.Outcome, it.res.Err = Error, c.Err
		case c.Created:
			it.create, it.res.Record = true, c.Record
			toEnqueue = append(toEnqueue, it)
		default:
			it.res.Record = c.Record
			if field := differs(c.Record, it.rec); field != "" {
				it.res.Outcome, it.res.Err = Conflict, &ConflictError{RequestID: it.req.RequestID, Field: field}
			} else if c.Record.State == status.Queued {
				// Known, but its task may have been lost between record and
				// enqueue (a crash): enqueue again; a conflict means it is there.
				toEnqueue = append(toEnqueue, it)
			} else {
				it.res.Outcome = Known
			}
		}
	}

	if p.cfg.Concurrency == 1 {
		for _, it := range toEnqueue {
			p.enqueueOne(ctx, it)
		}
		return results(items)
	}
	idx := make([]int, len(toEnqueue))
	for i := range idx {
		idx[i] = i
	}
	p.each(idx, func(_, i int) { p.enqueueOne(ctx, toEnqueue[i]) })
	return results(items)
}

// admit records pending requests and appends them to the backlog in one
// step per request; images to claim-check are stored first (only for ids
// not yet known), since the entry carries their reference.
func (p *Producer) admit(ctx context.Context, pending []*item) {
	inputs := make([]*storage.Input, len(pending))
	var checks []int
	for i, it := range pending {
		if it.raw != nil {
			checks = append(checks, i)
		}
	}
	if len(checks) > 0 {
		pipe := p.rdb.Pipeline()
		exists := make([]*redis.IntCmd, len(checks))
		for j, i := range checks {
			exists[j] = pipe.Exists(ctx, p.statuses.Key(pending[i].req.RequestID))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			for _, it := range pending {
				it.res.Outcome, it.res.Err = Error, fmt.Errorf("producer: %w", err)
			}
			return
		}
		p.each(checks, func(j, i int) {
			if exists[j].Val() > 0 {
				return // known: no image to store, the record answers
			}
			it := pending[i]
			ref, err := p.cfg.Inputs.Put(ctx, it.req.RequestID, it.raw)
			if err != nil {
				it.res.Outcome, it.res.Err = Error, fmt.Errorf("producer: claim check %s: %w", it.req.RequestID, err)
				return
			}
			inputs[i] = &ref
		})
	}
	var recs []status.Record
	var appends []records.Append
	var bodies [][]byte
	var idx []int
	b := p.backlog
	for i, it := range pending {
		if it.res.Outcome == Error {
			continue
		}
		payload := it.req
		if in := inputs[i]; in != nil {
			payload.ImageBase64 = ""
			payload.Input = &tasks.InputRef{Bucket: in.Bucket, Key: in.Key, Size: in.Size, SHA256: in.SHA256}
		}
		body, err := json.Marshal(payload)
		if err != nil {
			it.res.Outcome, it.res.Err = Error, fmt.Errorf("producer: encode %s: %w", it.req.RequestID, err)
			continue
		}
		lane, tenant := it.rec.Priority, it.rec.Tenant
		entryPayload := body
		if payload.Input == nil && payload.ImageBase64 == "" && reflect.DeepEqual(backlog.RequestOf(it.rec), payload.Request.ImplicitDefaults()) {
			entryPayload = nil // the record says it all: the feeder rebuilds the task from it
		}
		entry := backlog.Encode(backlog.Entry{Lane: lane, Tenant: tenant, RequestID: it.req.RequestID, Payload: entryPayload, BatchID: it.rec.BatchID, At: it.req.EnqueuedAt})
		recs = append(recs, it.rec)
		bodies = append(bodies, body)
		appends = append(appends, records.Append{List: b.ListKey(lane, tenant), Value: entry, Set: b.ActiveKey(), Member: backlog.Member(lane, tenant)})
		idx = append(idx, i)
	}
	removeInput := func(i int) {
		if inputs[i] == nil {
			return
		}
		if err := p.cfg.Inputs.Delete(context.WithoutCancel(ctx), *inputs[i]); err != nil {
			p.cfg.Logger.WarnContext(ctx, "producer: remove an unused claim-checked input", "request_id", pending[i].req.RequestID, "err", err)
		}
	}
	if len(recs) == 0 {
		return
	}
	created, err := p.statuses.CreateManyAppend(ctx, recs, appends)
	if err != nil {
		// The script may have run (a timeout after it did): its entries
		// would then refer to the images, so they stay, for the bucket's
		// lifecycle rule if nothing does.
		for _, i := range idx {
			pending[i].res.Outcome, pending[i].res.Err = Error, fmt.Errorf("producer: %w", err)
		}
		return
	}
	var repush []backlog.Entry
	for k, i := range idx {
		it, c := pending[i], created[k]
		switch {
		case c.Err != nil:
			it.res.Outcome, it.res.Err = Error, c.Err
			removeInput(i)
		case c.Created:
			it.res.Outcome, it.res.Record = Enqueued, c.Record
		default:
			if c.Record.SourceDigest != it.rec.SourceDigest {
				// Another image under this id: ours is not referred to. With
				// the same image, the key is the same object, and a twin
				// that got there first refers to it: it stays.
				removeInput(i)
			}
			it.res.Record = c.Record
			if field := differs(c.Record, it.rec); field != "" {
				it.res.Outcome, it.res.Err = Conflict, &ConflictError{RequestID: it.req.RequestID, Field: field}
				continue
			}
			it.res.Outcome = Known
			if p.statuses.Cluster() && c.Record.State == status.Queued && inputs[i] == nil {
				// On a Cluster the entry follows its record: a crash in
				// between is repaired here (a second entry is harmless).
				repush = append(repush, backlog.Entry{Lane: it.rec.Priority, Tenant: it.rec.Tenant, RequestID: it.req.RequestID,
					Payload: bodies[k], At: it.req.EnqueuedAt})
			}
		}
	}
	if len(repush) > 0 {
		if err := b.Push(ctx, repush); err != nil {
			p.cfg.Logger.WarnContext(ctx, "producer: re-queue known requests", "err", err)
		}
	}
}

// each runs fn(j, i) for each i of idx, Concurrency at a time.
func (p *Producer) each(idx []int, fn func(j, i int)) {
	sem := make(chan struct{}, p.cfg.Concurrency)
	var wg sync.WaitGroup
	for j, i := range idx {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(j, i)
		}()
	}
	wg.Wait()
}

// enqueueOne claim-checks the image if needed and enqueues the task; on
// failure it removes what it made, so nothing is left half-done.
func (p *Producer) enqueueOne(ctx context.Context, it *item) {
	var input *storage.Input
	undo := func(err error) {
		cleanup := context.WithoutCancel(ctx)
		if input != nil {
			err = errors.Join(err, p.cfg.Inputs.Delete(cleanup, *input))
		}
		if it.create {
			err = errors.Join(err, p.statuses.Undo(cleanup, it.rec))
		}
		it.res.Outcome, it.res.Err = Error, err
	}
	payload := it.req
	if it.raw != nil {
		ref, err := p.cfg.Inputs.Put(ctx, it.req.RequestID, it.raw)
		if err != nil {
			undo(fmt.Errorf("producer: claim check %s: %w", it.req.RequestID, err))
			return
		}
		input = &ref
		payload.ImageBase64 = ""
		payload.Input = &tasks.InputRef{Bucket: ref.Bucket, Key: ref.Key, Size: ref.Size, SHA256: ref.SHA256}
	}
	task, opts, err := tasks.NewCropTask(payload, p.cfg.Task)
	if err != nil {
		undo(fmt.Errorf("producer: %w", err))
		return
	}
	_, err = p.client.EnqueueContext(ctx, task, opts...)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		// The task exists already (a retried batch, or another producer). Its
		// claim check, if any, has the same key (same id, same digest): keep it.
		it.res.Outcome = Known
	case err != nil:
		undo(fmt.Errorf("producer: enqueue %s: %w", it.req.RequestID, err))
	case it.create:
		it.res.Outcome = Enqueued
	default:
		it.res.Outcome = Known // a queued record got its lost task back
	}
}

// differs names the first parameter in which two records of one id differ:
// by fingerprint, or, for a record written before fingerprints, by the
// parameters it kept (then: a field added since is never in such a record,
// and never needs a line here).
func differs(have, want status.Record) string {
	if have.Fingerprint != "" {
		return tasks.FingerprintDiff(have.Fingerprint, want.Fingerprint)
	}
	switch {
	case have.TargetWidth != want.TargetWidth:
		return "targetWidth"
	case have.TargetHeight != want.TargetHeight:
		return "targetHeight"
	case have.Source != want.Source:
		return "image source"
	case have.SourceURL != want.SourceURL:
		return "imageUrl"
	case have.SourceDigest != want.SourceDigest:
		return "imageBase64"
	case have.BatchID != want.BatchID:
		return "batchId"
	case have.CallbackURL != want.CallbackURL:
		return "callbackUrl"
	}
	return ""
}

func decodeBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(s)
	}
	return b, err
}

// results collects the outcomes in order; an item that repeats an earlier
// id of the same call is known when its parameters match the first's (which
// was enqueued or known), else a conflict.
func results(items []*item) []Result {
	out := make([]Result, len(items))
	for i, it := range items {
		if f := it.first; f != nil {
			field := tasks.FingerprintDiff(f.rec.Fingerprint, it.rec.Fingerprint)
			switch {
			case f.res.Outcome == Error:
				it.res.Outcome, it.res.Err = Error, f.res.Err
			case field != "":
				it.res.Outcome, it.res.Record = Conflict, f.res.Record
				it.res.Err = &ConflictError{RequestID: it.req.RequestID, Field: field}
			case f.res.Outcome == Conflict:
				it.res.Outcome, it.res.Record, it.res.Err = Conflict, f.res.Record, f.res.Err
			default:
				it.res.Outcome, it.res.Record = Known, f.res.Record
			}
		}
		out[i] = it.res
	}
	return out
}

// Get returns a request's status record (status.ErrNotFound if unknown).
func (p *Producer) Get(ctx context.Context, requestID string) (status.Record, error) {
	rec, err := p.statuses.Get(ctx, requestID)
	if err == nil && rec.State == status.Queued && p.cfg.Budgets != nil {
		// Said when read, not stored: a budget is the tenant's, not the
		// request's, and opens again for all its requests at once.
		if _, exhausted, _, berr := p.cfg.Budgets.Until(ctx, cmp.Or(rec.Tenant, tasks.DefaultTenant), 1); berr == nil && exhausted {
			rec.Reason = WaitingForBudget
		}
	}
	return rec, err
}

// BatchCounts returns how many requests of a tenant's batch are in each
// state ("" is the default tenant).
func (p *Producer) BatchCounts(ctx context.Context, tenant, batchID string) (map[status.State]int64, error) {
	return p.statuses.BatchCounts(ctx, tenant, batchID)
}

// BatchInfo is where a batch stands.
type BatchInfo struct {
	Counts    map[status.State]int64
	Total     int64
	Remaining int64 // not yet in a terminal state
	// Done: no request waits, and no manifest line is left to read.
	Done bool
	// Reading: the batch's manifest still has lines to read; the batch is
	// not done, whatever its counts.
	Reading bool
	// ReportWritten is where its report was written in S3 once done
	// (s3://bucket/key), when it asked for one.
	ReportWritten string
	// Priority is the lowest lane among the batch's requests: the batch is
	// done when its slowest part is.
	Priority string
	// ETA estimates how long until the remaining requests are done, from
	// what waits ahead of them in their lane, the tenants' shares and the
	// fleet's effective rate; -1 when unknown.
	ETA time.Duration
	// Saved counts the requests that reused a stored result instead of
	// paying (package dedup): paid calls saved.
	Saved int64
	// Manifest is how far the manifest of a manifest batch was read (nil
	// for a batch of requests); Total is then its lines once counted, and
	// Remaining includes an estimate of the lines left to read.
	Manifest *ManifestInfo
	// Waiting is why the batch does not move when it is not its turn:
	// WaitingForBudget while its tenant's budget of paid calls is spent,
	// until ResumesAt (the next period); empty otherwise.
	Waiting   string
	ResumesAt time.Time
	// Unchanged counts the requests whose destination already held their
	// crop: succeeded without a copy or a write (counted in Saved too).
	Unchanged int64
}

// Batch returns a tenant's batch ("" is the default tenant) with its
// estimate; status.ErrNotFound when the tenant has no such batch.
func (p *Producer) Batch(ctx context.Context, tenant, batchID string) (BatchInfo, error) {
	b, err := p.statuses.BatchState(ctx, tenant, batchID)
	if err != nil {
		return BatchInfo{}, err
	}
	m, isManifest, err := p.statuses.Manifest(ctx, tenant, batchID)
	if err != nil {
		return BatchInfo{}, err
	}
	if !b.Found() && !isManifest {
		return BatchInfo{}, status.ErrNotFound
	}
	saved, err := p.statuses.BatchSaved(ctx, tenant, batchID)
	if err != nil {
		return BatchInfo{}, err
	}
	unchanged, err := p.statuses.BatchUnchanged(ctx, tenant, batchID)
	if err != nil {
		return BatchInfo{}, err
	}
	bi := BatchInfo{Counts: b.Counts, Priority: b.Priority, ETA: -1, Done: b.Done(), Reading: b.Reading, Saved: saved,
		ReportWritten: b.ReportWritten, Unchanged: unchanged}
	for st, n := range b.Counts {
		bi.Total += n
		if !st.Terminal() {
			bi.Remaining += n
		}
	}
	if isManifest {
		manifestInfo(&bi, m)
	}
	if bi.Priority == "" {
		bi.Priority = tasks.PriorityNormal
	}
	budgetAt, budgetOK := time.Time{}, true
	if !bi.Done && p.cfg.Budgets != nil {
		at, exhausted, ok, err := p.cfg.Budgets.Until(ctx, cmp.Or(tenant, tasks.DefaultTenant), bi.Remaining)
		if err == nil {
			budgetAt, budgetOK = at, ok
			if exhausted {
				// At the next period (zero with a budget of 0: never).
				bi.Waiting, bi.ResumesAt = WaitingForBudget, at
			}
		}
	}
	switch {
	case bi.Done:
		bi.ETA = 0
	case !budgetOK:
		// A budget of 0: it never moves until the budget changes.
	case p.cfg.Rate != nil && p.backlog != nil:
		rate, rerr := p.cfg.Rate(ctx)
		stats, serr := p.backlog.Stats(ctx)
		if rerr == nil && serr == nil {
			if tenant == "" {
				tenant = tasks.DefaultTenant
			}
			bi.ETA = backlog.Estimate(stats, p.cfg.Weights, rate, bi.Priority, tenant, bi.Remaining)
			// What the feeder already moved into asynq runs first; the part
			// of it that is not this batch's delays it.
			if inflight, err := p.backlog.InAsynq(ctx, p.cfg.Task.Queue, time.Time{}); err == nil && bi.ETA >= 0 && rate > 0 {
				bi.ETA += time.Duration(float64(max(0, inflight-bi.Remaining)) / rate * float64(time.Second))
			}
			// The last of its calls waits for the period with room for it.
			if !budgetAt.IsZero() && bi.ETA >= 0 {
				bi.ETA = max(bi.ETA, time.Until(budgetAt))
			}
		}
	}
	return bi, nil
}

// ReportStats says what a report held: its lines, and whether the batch
// was done when it began (the report is then exact, one line per request).
type ReportStats = records.ReportStats

// ReportLine is one line of a batch's report (JSON).
type ReportLine = records.ReportLine

// Report writes a tenant's batch's report to w ("" is the default
// tenant): one JSON ReportLine per request of the batch, newline
// separated, streamed from Redis a page at a time, never held whole. Once
// the batch is done it is exact; while it runs, a request that ends while
// the report is read may appear twice (its last line holds). An unknown
// batch is status.ErrNotFound, before anything is written.
func (p *Producer) Report(ctx context.Context, tenant, batchID string, w io.Writer) (ReportStats, error) {
	return p.statuses.WriteReport(ctx, tenant, batchID, w)
}

// Cancel cancels a request that has not started: its record moves to
// canceled (a worker that picks the task up then stops), its task is
// deleted and so is its claim-checked input, if any; its callback URL, if
// any, hears of it. A request already running or finished gives a
// *status.TransitionError.
func (p *Producer) Cancel(ctx context.Context, requestID string) (status.Record, error) {
	rec, err := p.statuses.Cancel(ctx, requestID)
	if err != nil {
		return rec, err
	}
	// The task carries the only reference to a claim-checked input.
	var input *tasks.InputRef
	info, err := p.insp.GetTaskInfo(p.cfg.Task.Queue, requestID)
	switch {
	case err == nil:
		if pl, err := tasks.ParseCropPayload(info.Payload); err == nil {
			input = pl.Input
		}
	case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
		p.cfg.Logger.WarnContext(ctx, "producer: read the task of a canceled request; a claim-checked input may be left to the lifecycle rule",
			"request_id", requestID, "err", err)
	}
	if err := p.insp.DeleteTask(p.cfg.Task.Queue, requestID); err != nil &&
		!errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		// Canceled all the same: the record is the truth, and a worker that
		// holds the task (fetched, not yet started) stops on it, tidying up.
		p.cfg.Logger.WarnContext(ctx, "producer: delete the task of a canceled request",
			"request_id", requestID, "err", err)
	}
	if input != nil && p.cfg.Inputs != nil {
		ref := storage.Input{Bucket: input.Bucket, Key: input.Key, Size: input.Size, SHA256: input.SHA256}
		if err := p.cfg.Inputs.Delete(ctx, ref); err != nil {
			// Canceled all the same; the object is left to the bucket's
			// lifecycle rule.
			p.cfg.Logger.WarnContext(ctx, "producer: remove claim-checked input of a canceled request",
				"request_id", requestID, "err", err)
		}
	}
	if rec.CallbackURL != "" && p.cfg.Notifier != nil {
		if err := p.cfg.Notifier.Notify(context.WithoutCancel(ctx), rec.CallbackURL, rec); err != nil {
			// Canceled all the same; the events stream has it too.
			p.cfg.Logger.ErrorContext(ctx, "producer: enqueue the callback of a canceled request",
				"request_id", requestID, "err", err)
		}
	}
	return rec, nil
}
