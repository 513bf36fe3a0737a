// Package worker processes crop tasks: the asynq handler (the data path of
// one crop, top-down in this file), its retry policy and the server wiring.
package worker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

// Cropper calls the cropping API once (package cropapi's Client).
type Cropper interface {
	Crop(ctx context.Context, req cropapi.Request) (cropapi.Result, error)
}

// Copier copies a result URL into object storage (package storage's Copier).
type Copier interface {
	Copy(ctx context.Context, sourceURL string, obj results.Object) (results.Stored, error)
	// CheckBucket reports whether the destination is reachable: a result is
	// not paid for again while it could not be stored anyway.
	CheckBucket(ctx context.Context) error
	// CheckBucketOf does the same for a request's own bucket: a
	// *results.BucketError when it does not exist.
	CheckBucketOf(ctx context.Context, bucket string) error
	// CheckKey reports, before paying, a destination the result could not
	// be written to: another request's object (*results.KeyTakenError) or
	// outside the tenant's walls (*namespace.Error).
	CheckKey(ctx context.Context, obj results.Object) error
}

// StatusStore records the status of each request id (package records' Store).
type StatusStore interface {
	Transition(ctx context.Context, id string, u records.Update) (status.Record, error)
	Get(ctx context.Context, id string) (status.Record, error)
}

// Inputs reads and removes claim-checked source images (storage.Inputs).
type Inputs interface {
	Get(ctx context.Context, ref storage.Input) ([]byte, error)
	Delete(ctx context.Context, ref storage.Input) error
}

// Notifier tells a request's callback URL about its terminal state
// (package webhook, through its own asynq task).
type Notifier interface {
	Notify(ctx context.Context, callbackURL string, rec status.Record) error
}

// Quota is the fleet-wide limiter of API calls (package quota).
type Quota interface {
	// Wait takes a token; an error that is rate-limited (see Decide) when
	// the wait would be too long.
	Wait(ctx context.Context) error
	// Observe reports a call that succeeded or was rate limited.
	Observe(ctx context.Context, rateLimited bool)
}

// Budget caps each tenant's paid calls per period (package budget's
// Budgets): a call is reserved before it is made, and given back when it
// was not billed.
type Budget interface {
	// Check returns a *budget.ExhaustedError when tenant's budget is spent.
	Check(ctx context.Context, tenant string) error
	Reserve(ctx context.Context, tenant string) (budget.Reservation, error)
}

// Leases keeps a short lease on each running crop (package lease), so that
// the crops of a worker that died or froze run again within seconds.
// RedisLeases adapts package lease's Leases to it.
type Leases interface {
	Acquire(ctx context.Context, h lease.Holder) (context.Context, Lease, error)
}

// HandlerConfig tunes the handler. Zero values take defaults.
type HandlerConfig struct {
	// StatusTimeout bounds a status write made after the task's context ended
	// (default 5s), so that a shutdown still records why an attempt stopped.
	StatusTimeout time.Duration
	// Limits are the API's input rules, checked again before paying.
	Limits cropapi.Limits
	// Destinations are the tenants' walls in S3, checked again before
	// paying (nil: anywhere).
	Destinations tasks.Destinations
	// Inputs reads claim-checked images; a task carrying one fails without it.
	Inputs Inputs
	// Notifier, when set, is told of terminal states of requests that have a
	// callback URL.
	Notifier Notifier
	// Metrics records what the handler does (nil: nothing).
	Metrics *metrics.Pipeline
	// Quota, when set, gives out the account's API calls across the fleet
	// (package quota); nil calls the API as fast as tasks come.
	Quota Quota
	// RateLimitRetries is how many rate-limit answers one attempt retries in
	// place, through Quota, before handing the task back (default 2; only
	// with a Quota, which spaces the retries).
	RateLimitRetries int
	// StorageCheckInterval spaces bucket checks while uploads are failing
	// (default 1s); StorageMaxWait is how long a task waits in place for the
	// bucket before it is handed back unpaid (default 10s). See storageGate.
	StorageCheckInterval time.Duration
	StorageMaxWait       time.Duration
	// PersistFor bounds how long the checkpoint of a paid answer is retried
	// in place through a Redis outage (default 30s); past it the answer is
	// kept in memory (see FlushKept) rather than lost.
	PersistFor time.Duration
	// Budget, when set, caps each tenant's paid calls (see Budget): work
	// over budget waits, queued, for the next period.
	Budget Budget
	// Leases, when set, holds a lease on each running crop (see Leases);
	// an attempt whose lease was taken stops, and never pays after that.
	Leases Leases
	Logger *slog.Logger
	Now    func() time.Time
	// TracerProvider makes a "process" span of each attempt, in the
	// request's trace, with its steps as children (trace.go). Nil: none.
	TracerProvider trace.TracerProvider

	// Dedup and Reuse, when both set, reuse results stored under the same
	// crop key and coalesce twins in flight (step 2a, reuse.go).
	Dedup Dedup
	Reuse StoredCopier
	// CoalesceWait is how long an attempt waits in place for a twin that
	// holds the crop key's claim (default 2s), polling every CoalescePoll
	// (default 200ms), before it is handed back for CoalesceDelay (default
	// 1s; asynq's delayed-task check rounds it up).
	CoalesceWait  time.Duration
	CoalescePoll  time.Duration
	CoalesceDelay time.Duration

	// FreeQueue names the asynq queue of work the feeder expects to need
	// no paid call (a result of the same crop is indexed): its tasks never
	// take a quota token. One that turns out to need a call (the image
	// changed behind its URL, the stored result is gone) is handed to the
	// paid queue through Handoff. "" or a nil Handoff: every queue pays.
	FreeQueue string
	Handoff   Handoff
}

// Handoff moves a task of the free queue that needs a paid call to the
// paid queue, where the quota's window paces it (package backlog's
// TaskEnqueuer.Handoff). attempt is the attempt that found it: the paid
// task numbers its attempts on from it.
type Handoff interface {
	ToPaid(ctx context.Context, taskID string, attempt int, payload []byte) error
}

// Handler is the asynq handler of tasks.TypeCrop.
type Handler struct {
	cropper Cropper
	copier  Copier
	status  StatusStore
	cfg     HandlerConfig
	log     *slog.Logger
	gate    *storageGate
	buckets *bucketChecks
	kept    *keptAnswers
	// refusing is set when Redis refused a checkpoint write, and cleared by
	// the next checkpoint write that succeeds (FlushKept's included), or
	// by FlushKept once no kept answer is left: while set, no new call is
	// paid for in this worker, since its answer could not be recorded.
	refusing atomic.Bool
	tracer   trace.Tracer // nil with tracing off
}

// StatusUnavailableError is a crop not paid for because the status store
// refused the last checkpoint write: its answer could not be recorded.
type StatusUnavailableError struct{}

func (e *StatusUnavailableError) Error() string {
	return "status store refuses writes (Redis at its memory limit?), crop not paid for"
}

// NewHandler returns a handler using the given parts.
func NewHandler(cropper Cropper, copier Copier, st StatusStore, cfg HandlerConfig) *Handler {
	if cfg.StatusTimeout <= 0 {
		cfg.StatusTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RateLimitRetries <= 0 {
		cfg.RateLimitRetries = 2
	}
	if cfg.StorageCheckInterval <= 0 {
		cfg.StorageCheckInterval = time.Second
	}
	if cfg.StorageMaxWait <= 0 {
		cfg.StorageMaxWait = 10 * time.Second
	}
	if cfg.PersistFor <= 0 {
		cfg.PersistFor = 30 * time.Second
	}
	if cfg.CoalesceWait <= 0 {
		cfg.CoalesceWait = 2 * time.Second
	}
	if cfg.CoalescePoll <= 0 {
		cfg.CoalescePoll = 200 * time.Millisecond
	}
	if cfg.CoalesceDelay <= 0 {
		cfg.CoalesceDelay = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cropper: cropper, copier: copier, status: st, cfg: cfg, log: log,
		gate:    newStorageGate(copier.CheckBucket, cfg.StorageCheckInterval, cfg.StorageMaxWait, cfg.Now),
		buckets: &bucketChecks{check: copier.CheckBucketOf, now: cfg.Now, ok: map[string]time.Time{}},
		kept:    &keptAnswers{m: map[string]keptAnswer{}},
		tracer:  tracing.TracerIfOn(cfg.TracerProvider)}
}

// ProcessTask runs one attempt of a crop:
//
//  1. mark the record running (a stale or finished attempt stops here);
//     2a. reuse a result stored under the same crop key, or wait for a
//     twin paying for it (reuse.go);
//  2. reuse an unexpired checkpointed result URL, or call the API and
//     checkpoint its answer, so that a retry never pays twice (and not
//     while uploads are failing: see storageGate);
//  3. stream the result into S3 (an expired URL is cropped again, once);
//  4. mark the record succeeded.
//
// Errors are classified once, in h.fail, into asynq's outcomes.
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	// asynq hands these over only through the context, with no way to set
	// them outside a server: read here, so that ProcessRun can be driven
	// without one (package workertest's tests).
	var run TaskRun
	run.Retried, _ = asynq.GetRetryCount(ctx)
	run.MaxRetry, _ = asynq.GetMaxRetry(ctx)
	run.TaskID, _ = asynq.GetTaskID(ctx)
	run.Queue, _ = asynq.GetQueueName(ctx)
	return h.ProcessRun(ctx, run, t.Payload())
}

// TaskRun is what asynq tells a handler about one run of a task.
type TaskRun struct {
	TaskID   string
	Queue    string
	Retried  int // retries so far: 0 on the first run
	MaxRetry int // the run with Retried == MaxRetry is the last
}

// ProcessRun is ProcessTask with asynq's facts about the run given rather
// than read from ctx.
func (h *Handler) ProcessRun(ctx context.Context, run TaskRun, payload []byte) error {
	p, err := tasks.ParseCropPayload(payload)
	if err != nil {
		// Not ours to fix by retrying; without a trusted id there is no record.
		h.log.ErrorContext(ctx, "crop: undecodable payload", "err", err)
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if p.ImageURL != "" && p.ImageBase64 != "" {
		// Queued before the entrances refused two sources: keep the API's
		// rule (base64 wins) rather than fail it now.
		p.ImageURL = ""
	}
	n := run.Retried + 1
	if r := p.Rescue; r != nil {
		// A rescue task numbers its attempts on from the one it replaces.
		n += r.Attempt
	}
	if h.tracer == nil {
		return h.run(ctx, run, p, n, payload)
	}
	ctx, span := h.processSpan(ctx, p, run, n)
	err = h.run(ctx, run, p, n, payload)
	endSpan(span, err)
	return err
}

// run is attempt n of the crop p.
func (h *Handler) run(ctx context.Context, run TaskRun, p tasks.CropPayload, n int, payload []byte) error {
	retried, maxRetry, taskID, queue := run.Retried, run.MaxRetry, run.TaskID, run.Queue
	var takeover *records.Takeover
	if r := p.Rescue; r != nil {
		takeover = &records.Takeover{From: r.From, Attempt: r.Attempt}
	}
	seed := RecordOf(p)
	a := attempt{payload: p, n: n, last: retried >= maxRetry, task: taskID, seed: &seed, raw: payload,
		free: h.cfg.FreeQueue != "" && h.cfg.Handoff != nil && queue == h.cfg.FreeQueue,
		log:  h.log.With("request_id", p.RequestID, "task_id", taskID, "attempt", n)}

	// 0. Budget: a tenant that spent its budget for the period waits for the
	// next one, its request queued (not on its last run, which asynq would
	// archive: that one goes on, and fails with code budget if the budget
	// is still spent when it would pay). Work in the free queue goes on: it
	// pays nothing there (a changed source is handed to the paid queue).
	if h.cfg.Budget != nil && !a.last && !a.free {
		var ex *budget.ExhaustedError
		if err := h.cfg.Budget.Check(ctx, p.Tenant); errors.As(err, &ex) {
			a.log.InfoContext(ctx, "crop: the tenant's budget is spent; waiting for the next period", "tenant", ex.Tenant, "until", ex.Until)
			return &notFailureError{err: err, delay: ex.WaitFor()}
		}
	}

	// 0. Lease: while this worker renews it, the crop is its own; if it
	// dies or freezes, the fleet's rescuer hands the crop to another task
	// within seconds (package lease).
	if h.cfg.Leases != nil {
		var err error
		if ctx, a.lease, err = h.cfg.Leases.Acquire(ctx, lease.Holder{Queue: queue, TaskID: taskID, Attempt: n}); err != nil {
			return h.fail(ctx, a, err)
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.StatusTimeout)
			defer cancel()
			if err := a.lease.Release(rctx); err != nil {
				a.log.WarnContext(ctx, "crop: release lease", "err", err)
			}
		}()
	}

	// 1. Running.
	rec, err := h.status.Transition(ctx, p.RequestID, a.by().Start(takeover))
	var te *status.TransitionError
	switch {
	case errors.As(err, &te) && te.From == status.Canceled:
		// Canceled while queued; the producer could not delete a task a
		// worker had already fetched, so tidy up here (a callback already
		// enqueued by the producer is not sent twice).
		a.log.InfoContext(ctx, "crop: canceled, nothing to do")
		h.removeInput(ctx, a)
		h.notify(ctx, a, rec) // the canceled record, returned with the refusal
		return nil
	case errors.As(err, &te) && te.From.Terminal():
		a.log.InfoContext(ctx, "crop: already finished, nothing to do", "state", te.From)
		return nil
	case errors.Is(err, records.ErrStaleAttempt):
		a.log.WarnContext(ctx, "crop: a newer attempt owns this request; stopping")
		return nil
	case err != nil:
		return h.fail(ctx, a, fmt.Errorf("mark running: %w", err))
	}
	if len(rec.History) == 1 && rec.History[0].State == status.Running {
		// Written again from the payload (records.Again): a record's
		// history starts with queued otherwise.
		a.log.WarnContext(ctx, "crop: the request had no record (Redis lost it?); written again from its task", "batch_id", p.BatchID)
	}
	// Checked again before paying: a task queued by an older producer may
	// carry what the entrances now refuse (a key template that cannot
	// render); it fails here, unpaid.
	if err := p.Validate(tasks.Rules{Limits: h.cfg.Limits, AnyCallbackAddress: true, Destinations: h.cfg.Destinations}); err != nil {
		return h.fail(ctx, a, err)
	}

	// 2a. Reuse or coalesce (reuse.go): a result already stored under the
	// same crop key is copied server-side instead of paid for again, and a
	// twin in flight is waited for, so that only one of them pays.
	claim, ended, err := h.reuseTraced(ctx, a, rec)
	if ended {
		return err
	}
	defer claim.release(ctx)
	a.crop = claim.crop(p.RequestID)

	// 2. Crop, unless an earlier attempt already paid for a result that is
	// still downloadable.
	cp := rec.Checkpoint
	if !cp.Usable() {
		// A paid answer this worker could not checkpoint (Redis refused
		// writes) is still good: record it now instead of paying again.
		if k, ok := h.kept.take(p.RequestID, h.cfg.Now()); ok {
			if err := h.checkpoint(ctx, a, &k.cp, k.usage, false, k.until); err != nil {
				h.kept.put(p.RequestID, k)
				return h.fail(ctx, a, err)
			}
			a.log.InfoContext(ctx, "crop: checkpointed a paid answer kept through a Redis outage", "api_request_id", k.cp.APIRequestID)
			cp = &k.cp
		}
	}
	reused := cp.Usable()
	if reused {
		a.log.InfoContext(ctx, "crop: reusing checkpointed result", "api_request_id", cp.APIRequestID, "expires_at", cp.ExpiresAt)
		// While uploads are failing, a copy would fail too and spend one of
		// the request's retries on the bucket's outage: wait for the bucket
		// like an unpaid crop does (closed, the gate costs an atomic load).
		if err := h.storageReady(ctx, a, false); err != nil {
			return h.fail(ctx, a, err)
		}
	} else {
		// Free work takes no token: what needs one goes to the paid queue.
		if a.free {
			return h.handoff(ctx, a, claim)
		}
		// A result that cannot be stored is money spent for nothing: while
		// uploads fail, wait for the bucket. Paying again for an expired
		// result always checks it first.
		if err := h.storageReady(ctx, a, cp != nil); err != nil {
			return h.fail(ctx, a, err)
		}
		// Nor is a result whose key holds another request's object.
		if err := h.copier.CheckKey(ctx, a.object(nil)); err != nil {
			return h.fail(ctx, a, fmt.Errorf("check destination: %w", err))
		}
		h.recordSource(ctx, a, claim)
		if cp, err = h.crop(ctx, a, cp != nil); err != nil {
			return h.fail(ctx, a, err)
		}
	}

	// 3. Copy into S3. An expired URL from an earlier attempt is cropped again,
	// once, within this attempt.
	stored, err := h.copy(ctx, a, cp)
	var se *results.SourceError
	if reused && errors.As(err, &se) && se.Expired {
		a.log.InfoContext(ctx, "crop: checkpointed result expired; cropping again", "api_request_id", cp.APIRequestID)
		if a.free {
			return h.handoff(ctx, a, claim)
		}
		if err := h.storageReady(ctx, a, true); err != nil {
			return h.fail(ctx, a, err)
		}
		h.recordSource(ctx, a, claim)
		if cp, err = h.crop(ctx, a, true); err != nil {
			return h.fail(ctx, a, err)
		}
		stored, err = h.copy(ctx, a, cp)
	}
	if err != nil {
		return h.fail(ctx, a, err)
	}

	// 4. Succeeded.
	var done status.Record
	err = h.persist(ctx, time.Time{}, func() error {
		var err error
		done, err = h.status.Transition(ctx, p.RequestID, a.by().Succeed(status.Stored{
			Bucket: stored.Bucket, Key: stored.Key, ETag: stored.ETag, Size: stored.Size, ContentType: stored.ContentType,
			Width: cp.Width, Height: cp.Height, APIRequestID: cp.APIRequestID,
		}))
		return err
	})
	if err != nil {
		// The object is stored; the next attempt reuses the checkpoint and
		// overwrites the same key, still without paying.
		return h.fail(ctx, a, fmt.Errorf("mark succeeded: %w", err))
	}
	a.log.InfoContext(ctx, "crop: stored", "bucket", stored.Bucket, "key", stored.Key, "size", stored.Size)
	h.remember(ctx, a, claim, done)
	h.removeInput(ctx, a)
	h.cfg.Metrics.Finished(string(status.Succeeded), "")
	h.notify(ctx, a, done)
	return nil
}

// removeInput deletes a claim-checked image once its request is terminal;
// a failure to do so only leaves a stray object for the bucket's lifecycle
// rule.
func (h *Handler) removeInput(ctx context.Context, a attempt) {
	if a.payload.Input == nil || h.cfg.Inputs == nil {
		return
	}
	if err := h.cfg.Inputs.Delete(ctx, inputRef(a.payload.Input)); err != nil {
		a.log.WarnContext(ctx, "crop: remove claim-checked input", "err", err)
	}
}

func inputRef(in *tasks.InputRef) storage.Input {
	return storage.Input{Bucket: in.Bucket, Key: in.Key, Size: in.Size, SHA256: in.SHA256}
}

// notify hands a terminal state to the Notifier; a failure to do so is
// logged, never a reason to crop again.
func (h *Handler) notify(ctx context.Context, a attempt, rec status.Record) {
	if h.cfg.Notifier == nil || a.payload.CallbackURL == "" || !rec.State.Terminal() {
		return
	}
	err := h.traced(ctx, SpanNotify, func(ctx context.Context) error {
		return h.cfg.Notifier.Notify(context.WithoutCancel(ctx), a.payload.CallbackURL, rec)
	})
	if err != nil {
		a.log.ErrorContext(ctx, "crop: enqueue callback", "err", err)
	}
}

// attempt is what one run of ProcessTask knows about itself.
type attempt struct {
	payload tasks.CropPayload
	n       int  // 1-based attempt number
	last    bool // no retry follows a failure of this attempt
	task    string
	lease   Lease // nil without Leases
	log     *slog.Logger
	// seed is the request's record as its payload describes it: a start or
	// a failure writes it again if Redis lost the record (records.Again).
	seed *status.Record
	raw  []byte // the task's payload, as handed over
	// free: a task of the free queue, which never takes a quota token.
	free bool
	// crop names the crop the result is, on its stored object (zero
	// without result reuse).
	crop results.Crop
}

// handoff moves a free-queue task that needs a paid call to the paid
// queue (HandlerConfig.Handoff), giving up the crop key's claim first so
// that the paid task, or a twin, can take it. The record stays running:
// the paid task's first run takes it over.
func (h *Handler) handoff(ctx context.Context, a attempt, c *claim) error {
	c.release(ctx)
	if err := h.cfg.Handoff.ToPaid(ctx, a.task, a.n, a.raw); err != nil {
		return h.fail(ctx, a, fmt.Errorf("hand to the paid queue: %w", err))
	}
	a.log.InfoContext(ctx, "crop: needs a paid call; handed to the paid queue")
	return nil
}

// by names this attempt on the status record.
func (a attempt) by() records.By { return records.By{Attempt: a.n, Task: a.task, Seed: a.seed} }

// owned is asked right before paying: a worker that froze past its lease
// (its crop now another task's), or whose task asynq's recoverer ran again
// elsewhere (its clock far behind the others'), must not pay for it.
func (h *Handler) owned(ctx context.Context, a attempt) error {
	held, err := true, error(nil)
	if a.lease != nil {
		held, err = a.lease.Held(ctx)
	}
	switch {
	case err != nil:
		return err
	case !held:
		return lease.ErrLost
	case h.refusing.Load():
		return &StatusUnavailableError{}
	}
	rec, err := h.status.Get(ctx, a.payload.RequestID)
	if err != nil {
		return fmt.Errorf("check ownership: %w", err)
	}
	if rec.Attempt > a.n || (rec.Task != "" && rec.Task != a.task) {
		return records.ErrStaleAttempt
	}
	return nil
}

// crop pays for one API call and checkpoints its answer. With a Quota, the
// call waits for the fleet's token first, and its outcome adapts the rate.
func (h *Handler) crop(ctx context.Context, a attempt, discardOld bool) (*status.Checkpoint, error) {
	start := h.cfg.Now()
	res, err := h.callAPI(ctx, a)
	if err != nil {
		return nil, fmt.Errorf("crop: %w", err)
	}
	h.cfg.Metrics.PaidCall(a.payload.EffectiveTenant())
	a.log.InfoContext(ctx, "crop: API answered", "api_request_id", res.RequestID, "usage", res.Usage,
		"width", res.Width, "height", res.Height, "took", h.cfg.Now().Sub(start))
	cp := &status.Checkpoint{ResultURL: res.ImageURL, ExpiresAt: res.ExpiresAt, Lifetime: res.Lifetime, Width: res.Width, Height: res.Height,
		APIRequestID: res.RequestID, TraceID: res.TraceID}
	// How long the paid answer is worth holding on to, on this worker's
	// clock from the moment it arrived (the vendor's Expires is on the
	// vendor's clock).
	expires := time.Time{}
	if res.Lifetime > 0 {
		expires = start.Add(res.Lifetime) // start: taken before the call, so a little early
	}
	if err := h.checkpoint(ctx, a, cp, res.Usage, discardOld, expires); err != nil {
		if refused(err) {
			// Redis would not take it: keep the paid answer here, bounded,
			// until its URL expires; the next attempt on this worker, or
			// FlushKept once Redis takes writes, records it.
			until := expires
			if until.IsZero() {
				until = h.cfg.Now().Add(time.Hour) // the URL's life is unknown: the download will tell
			}
			if h.kept.put(a.payload.RequestID, keptAnswer{cp: *cp, usage: res.Usage, until: until}) {
				a.log.WarnContext(ctx, "crop: Redis refused the checkpoint; the paid answer is kept in memory", "api_request_id", cp.APIRequestID)
			}
		}
		return nil, err
	}
	return cp, nil
}

// checkpoint records a paid answer, retrying in place through a short Redis
// outage: it is what keeps a retry from paying again.
func (h *Handler) checkpoint(ctx context.Context, a attempt, cp *status.Checkpoint, usage int, discardOld bool, expires time.Time) error {
	err := h.persist(ctx, expires, func() error {
		_, err := h.status.Transition(ctx, a.payload.RequestID, a.by().Checkpoint(cp, usage, discardOld))
		return err
	})
	switch {
	case err == nil:
		h.refusing.Store(false)
	case refused(err):
		h.refusing.Store(true) // see owned
	}
	if err != nil {
		return fmt.Errorf("checkpoint result: %w", err)
	}
	return nil
}

// refused reports a status write the store would not take (Redis away or
// at its memory limit), as opposed to one it refused to make (a stale
// attempt, a move the state machine forbids), which no retry changes.
func refused(err error) bool {
	return err != nil && !errors.Is(err, records.ErrStaleAttempt) && !errors.As(err, new(*status.TransitionError))
}

// FlushKept records the paid answers kept through a Redis outage on their
// requests, as soon as Redis takes writes again, so that an attempt on any
// worker finds them; run it every few seconds. It returns how many it
// recorded. An answer whose request moved on (finished, or checkpointed
// again) is dropped; one whose URL expired is dropped as worthless.
func (h *Handler) FlushKept(ctx context.Context) int {
	n := 0
	for id, k := range h.kept.snapshot(h.cfg.Now()) {
		rec, err := h.status.Get(ctx, id)
		switch {
		case errors.Is(err, status.ErrNotFound):
			h.kept.drop(id, k)
			continue
		case err != nil:
			return n // Redis still away: try again later
		case rec.State.Terminal() || rec.Checkpoint.Usable():
			h.kept.drop(id, k)
			continue
		}
		// The record's own state and attempt: the answer is attached, not
		// a move (running, cropped and retrying each may stay where they are).
		_, err = h.status.Transition(ctx, id, records.Attach(rec, &k.cp, k.usage))
		switch {
		case err == nil:
			h.kept.drop(id, k)
			h.refusing.Store(false)
			n++
			h.log.InfoContext(ctx, "crop: recorded a paid answer kept through a Redis outage", "request_id", id, "api_request_id", k.cp.APIRequestID)
		case refused(err):
			return n // Redis still refuses: try again later
		}
		// Otherwise the record moved meanwhile; the next look decides.
	}
	if len(h.kept.snapshot(h.cfg.Now())) == 0 {
		h.refusing.Store(false) // nothing left to protect: the next checkpoint tells
	}
	return n
}

// gated reports whether the storage gate speaks for this request: it checks
// the default bucket, so one request's own bucket neither passes through it
// nor opens it.
func (a attempt) gated() bool { return a.payload.Bucket == "" }

// storageReady asks the storage gate whether a crop may be paid for now;
// a request's own bucket is checked instead (a missing one fails unpaid).
func (h *Handler) storageReady(ctx context.Context, a attempt, force bool) error {
	if !a.gated() {
		// A bucket that does not exist fails the request unpaid; one S3
		// cannot tell about is a storage error like a failed upload: retried,
		// and counted against MaxRetry (a hand-back would never end).
		return h.buckets.allow(ctx, a.payload.Bucket)
	}
	err := h.gate.allow(ctx, force)
	if errors.As(err, new(*StorageUnavailableError)) {
		h.cfg.Metrics.StorageDeferred()
		a.log.WarnContext(ctx, "crop: bucket unreachable; not paying for a result that could not be stored", "err", err)
	}
	return err
}

// persist runs write until it succeeds, fails for a reason retrying cannot
// change (a stale attempt, a forbidden move), ctx ends, or the window closes:
// PersistFor, and no later than the paid result URL's expiry.
func (h *Handler) persist(ctx context.Context, expires time.Time, write func() error) error {
	deadline := h.cfg.Now().Add(h.cfg.PersistFor)
	if !expires.IsZero() && expires.Before(deadline) {
		deadline = expires
	}
	delay := 100 * time.Millisecond
	for {
		err := write()
		var te *status.TransitionError
		if err == nil || errors.Is(err, records.ErrStaleAttempt) || errors.As(err, &te) || errors.Is(err, status.ErrNotFound) ||
			!h.cfg.Now().Add(delay).Before(deadline) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func (h *Handler) callAPI(ctx context.Context, a attempt) (cropapi.Result, error) {
	req := a.payload.CropRequest()
	if in := a.payload.Input; in != nil {
		if h.cfg.Inputs == nil {
			return cropapi.Result{}, &storage.InputError{Bucket: in.Bucket, Key: in.Key, Err: errors.New("this worker has no store of claim-checked images configured (HandlerConfig.Inputs)")}
		}
		data, err := h.cfg.Inputs.Get(ctx, inputRef(in))
		if err != nil {
			return cropapi.Result{}, err
		}
		req.ImageBase64 = base64.StdEncoding.EncodeToString(data)
	}
	if h.cfg.Quota == nil {
		rsv, err := h.reserve(ctx, a)
		if err != nil {
			return cropapi.Result{}, err
		}
		if err := h.owned(ctx, a); err != nil {
			h.refund(ctx, a, rsv)
			return cropapi.Result{}, err
		}
		res, err := h.cropOnce(ctx, req)
		if err != nil && !billed(err) {
			h.refund(ctx, a, rsv)
		}
		return res, err
	}
	for try := 0; ; try++ {
		// The budget first: a call it refuses takes no token.
		rsv, err := h.reserve(ctx, a)
		if err != nil {
			return cropapi.Result{}, err
		}
		start := h.cfg.Now()
		err = h.traced(ctx, SpanQuotaWait, h.cfg.Quota.Wait)
		h.cfg.Metrics.QuotaWait(h.cfg.Now().Sub(start), errors.As(err, new(rateLimited)))
		if err != nil {
			h.refund(ctx, a, rsv)
			return cropapi.Result{}, err
		}
		if err := h.owned(ctx, a); err != nil {
			h.refund(ctx, a, rsv)
			return cropapi.Result{}, err
		}
		res, err := h.cropOnce(ctx, req)
		if err != nil && !billed(err) {
			h.refund(ctx, a, rsv)
		}
		limited := cropapi.IsRateLimited(err)
		if err == nil || limited {
			h.cfg.Quota.Observe(ctx, limited)
		}
		if !limited || try >= h.cfg.RateLimitRetries {
			return res, err
		}
		a.log.InfoContext(ctx, "crop: rate limited by the API; retrying through the shared quota", "code", cropapi.CodeOf(err))
	}
}

// reserve counts the call a is about to make against its tenant's budget.
func (h *Handler) reserve(ctx context.Context, a attempt) (budget.Reservation, error) {
	if h.cfg.Budget == nil {
		return budget.Reservation{}, nil
	}
	return h.cfg.Budget.Reserve(ctx, a.payload.Tenant)
}

// refund gives back the reservation of a call not made or not billed; a
// refund that fails leaves the budget one call short, never over.
func (h *Handler) refund(ctx context.Context, a attempt, r budget.Reservation) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.StatusTimeout)
	defer cancel()
	if err := r.Refund(rctx); err != nil {
		a.log.WarnContext(ctx, "crop: give back a budget reservation", "err", err)
	}
}

// billed reports whether a call that returned err may have been billed:
// the vendor bills successful calls only, so a failure it answered is not,
// nor a request never sent; an outcome not known (no answer, or one that
// could not be read) may have been.
func billed(err error) bool {
	var (
		api *cropapi.APIError
		gw  *cropapi.GatewayError
		val *cropapi.ValidationError
		tr  *cropapi.TransportError
	)
	switch {
	case errors.As(err, &api), errors.As(err, &gw), errors.As(err, &val):
		return false
	case errors.As(err, &tr):
		return tr.StatusCode < 300
	}
	return true
}

// cropOnce is one API call, measured.
func (h *Handler) cropOnce(ctx context.Context, req cropapi.Request) (cropapi.Result, error) {
	start := h.cfg.Now()
	vctx, span := h.vendorSpan(ctx)
	res, err := h.cropper.Crop(vctx, req)
	endVendorSpan(span, res, err, h.cfg.Now().Sub(start))
	code, class := "200", "ok"
	if err != nil {
		code, class = cropapi.CodeOf(err), cropapi.ClassOf(err).String()
		if code == "" {
			code = "other"
		}
	}
	h.cfg.Metrics.APICall(code, class, h.cfg.Now().Sub(start), res.Usage)
	return res, err
}

// object is where a's result goes, in its tenant's namespace; cp (nil
// before paying) gives the vendor's request id.
func (a attempt) object(cp *status.Checkpoint) results.Object {
	p := a.payload
	o := results.Object{RequestID: p.RequestID, Width: p.TargetWidth, Height: p.TargetHeight,
		Tenant: p.Tenant, Bucket: p.Bucket, KeyTemplate: p.KeyTemplate, Metadata: p.Metadata, Crop: a.crop}
	if cp != nil {
		o.APIRequestID = cp.APIRequestID
	}
	return o
}

func (h *Handler) copy(ctx context.Context, a attempt, cp *status.Checkpoint) (results.Stored, error) {
	start := h.cfg.Now()
	cctx, span := h.span(ctx, SpanCopy)
	stored, err := h.copier.Copy(cctx, cp.ResultURL, a.object(cp))
	endCopySpan(span, stored, err)
	h.cfg.Metrics.Copy(stored.Size, h.cfg.Now().Sub(start), err)
	if a.gated() {
		h.gate.observe(ctx, err)
	}
	if err != nil {
		return results.Stored{}, fmt.Errorf("copy result: %w", err)
	}
	return stored, nil
}

// fail records why the attempt stopped and turns err into asynq's outcome,
// following the retry policy (policy.go).
func (h *Handler) fail(ctx context.Context, a attempt, err error) error {
	if errors.Is(context.Cause(ctx), lease.ErrLost) && !errors.Is(err, lease.ErrLost) {
		err = fmt.Errorf("%w: %w", lease.ErrLost, err)
	}
	if errors.Is(err, records.ErrStaleAttempt) {
		// Another attempt owns the request now; it records what happens.
		a.log.WarnContext(ctx, "crop: a newer attempt owns this request; stopping", "err", err)
		return nil
	}
	d, code := Classify(err)
	// On the last attempt even a hand-back that is not a failure (a rate
	// limit, the storage gate) ends the request: asynq archives a task
	// whose retries are spent whatever IsFailure says, so a record left
	// "retrying" would never move again. Not when this worker is shutting
	// down, though (the task's context canceled): asynq then puts the task
	// back itself, and the next run must find the request open.
	shutdown := errors.Is(ctx.Err(), context.Canceled) && !errors.Is(err, lease.ErrLost)
	final := !d.Retry || (a.last && !shutdown)
	msg := err.Error()
	// The task's context may be over (shutdown, timeout): still record why.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.StatusTimeout)
	defer cancel()
	rec, serr := h.status.Transition(sctx, a.payload.RequestID, a.by().Fail(final, code, msg))
	if serr != nil && !errors.Is(serr, records.ErrStaleAttempt) {
		a.log.ErrorContext(ctx, "crop: record failure", "err", serr)
	}
	if serr == nil {
		if final {
			h.cfg.Metrics.Finished(string(status.Failed), code)
			h.removeInput(sctx, a)
		}
		h.notify(sctx, a, rec)
	}
	a.log.WarnContext(ctx, "crop: attempt failed", "class", d.Class, "error_code", code, "err", err, "final", final)
	if final {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if !d.CountsAsFailure {
		return &notFailureError{err: err, delay: d.Delay}
	}
	return err
}
