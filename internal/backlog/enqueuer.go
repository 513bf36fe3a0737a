package backlog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Records reads status records, and fails the requests of entries that
// can never be fed (records.Store).
type Records interface {
	Get(ctx context.Context, id string) (status.Record, error)
	FailWaiting(ctx context.Context, seed status.Record, code, message string) (status.Record, error)
}

// TaskEnqueuer feeds crop tasks into asynq with the producers' task
// options. The payload was validated when its request was accepted; it is
// only decoded here, to make sure this version can run it. An entry
// without a payload (see RequestOf) is rebuilt from its status record.
type TaskEnqueuer struct {
	Client  *asynq.Client
	Options tasks.Options
	Records Records
	// Inspector, when set, lets a request whose id an old archived task
	// still holds be run: asynq keeps archived tasks far longer (90 days)
	// than records live, so an id submitted again after its record expired
	// would otherwise be taken for fed and never run.
	Inspector *asynq.Inspector
}

// Feed enqueues the task of requestID; one that exists already (a repeated
// feed) is not an error, and neither is a request that was canceled (or
// otherwise finished) while it waited: there is nothing to run.
func (e TaskEnqueuer) Feed(ctx context.Context, requestID string, payload []byte) error {
	if _, ok := idOnly(payload); ok {
		rec, err := e.Records.Get(ctx, requestID)
		switch {
		case errors.Is(err, status.ErrNotFound):
			// Waiting records do not expire: Redis lost it (or an earlier
			// version let it expire), and with it the request's parameters.
			return &BadEntryError{Lost: true, Err: fmt.Errorf("request %s has no record, and its backlog entry holds only its id", requestID)}
		case err != nil:
			return err
		case rec.State != status.Queued:
			return nil // canceled while it waited: never run, never paid
		}
		// Validated when accepted, and again by the worker before paying
		// (which fails the request properly if rules changed meanwhile).
		b, err := json.Marshal(tasks.CropPayload{Version: tasks.PayloadVersion, Request: RequestOf(rec), EnqueuedAt: rec.CreatedAt,
			Traceparent: rec.Traceparent})
		if err != nil {
			return &BadEntryError{Err: err}
		}
		return e.enqueue(ctx, requestID, asynq.NewTask(tasks.TypeCrop, b), tasks.TaskOptions(requestID, e.Options))
	}
	p, err := tasks.ParseCropPayload(payload)
	if err != nil {
		return &BadEntryError{Err: err}
	}
	if p.RequestID != requestID {
		return &BadEntryError{Err: fmt.Errorf("entry of %s holds the payload of %s", requestID, p.RequestID)}
	}
	return e.enqueue(ctx, requestID, asynq.NewTask(tasks.TypeCrop, payload), tasks.TaskOptionsFor(p, e.Options))
}

// Drop ends, failed, the request of an entry that can never be fed (the
// cause Feed returned): with code record_lost when its record is gone,
// bad_entry otherwise. Its record says so, and its batch counts it, the
// record being written again, from what the entry carries, if Redis lost
// it: the id, the tenant and lane of its list, when it was accepted, and
// the request itself when the payload can still be read, or, for an
// id-only entry, its batch (an entry written before entries named their
// batch leaves it counting the request as queued).
func (e TaskEnqueuer) Drop(ctx context.Context, en Entry, cause *BadEntryError) error {
	seed := status.Record{RequestID: en.RequestID, Params: tasks.Params{Tenant: en.Tenant, Priority: en.Lane}}
	var p tasks.CropPayload
	if batch, ok := idOnly(en.Payload); ok {
		seed.BatchID = batch
	} else if json.Unmarshal(en.Payload, &p) == nil && p.RequestID == en.RequestID {
		seed = worker.RecordOf(p) // loosely read: what this version cannot run may still name its batch
	}
	if seed.CreatedAt.IsZero() {
		seed.CreatedAt = en.At
	}
	code := worker.CodeBadEntry
	if cause.Lost {
		code = worker.CodeRecordLost
	}
	if _, err := e.Records.FailWaiting(ctx, seed, string(code), cause.Error()); err != nil {
		return fmt.Errorf("fail %s: %w", en.RequestID, err)
	}
	return nil
}

func (e TaskEnqueuer) enqueue(ctx context.Context, id string, task *asynq.Task, opts []asynq.Option) error {
	_, err := e.Client.EnqueueContext(ctx, task, opts...)
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		return err
	}
	// The id is taken: by this request's own task (fed before), or by an
	// archived task of an earlier request of the same id whose record is
	// gone, which must not swallow this one.
	if e.Inspector == nil || e.Records == nil {
		return nil
	}
	queue := cmp.Or(e.Options.Queue, tasks.DefaultQueue)
	info, ierr := e.Inspector.GetTaskInfo(queue, id)
	if ierr != nil || info.State != asynq.TaskStateArchived {
		return nil
	}
	rec, rerr := e.Records.Get(ctx, id)
	if rerr != nil || rec.State != status.Queued || rec.Attempt != 0 {
		return nil // this request's own task, archived after it ran
	}
	if err := e.Inspector.DeleteTask(queue, id); err != nil {
		return fmt.Errorf("remove the archived task holding %s: %w", id, err)
	}
	_, err = e.Client.EnqueueContext(ctx, task, opts...)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// RequestOf is the request a queued status record describes, for requests
// whose image is a URL: their backlog entry can then hold just the id (a
// few bytes instead of the payload), and the feeder rebuilds the task from
// the record. A producer uses an id-only entry only when RequestOf gives
// back exactly the request it was given, so a field the record does not
// keep can never be lost: such requests keep their payload in the entry.
func RequestOf(rec status.Record) tasks.Request {
	return tasks.Request{RequestID: rec.RequestID, ImageURL: rec.SourceURL, Params: rec.Params}.ImplicitDefaults()
}

// ToPaid moves a task of the free queue that needs a paid call (its image
// changed behind its URL, its stored result is gone) into this
// enqueuer's queue, the paid one (worker.Handoff). The new task takes the
// request over from taskID on its first run (as a rescue does), numbering
// its attempts on from attempt, so that the record never sees an older
// attempt; its id is the request's with "~paid", since the request id is
// the free task's own while it is kept.
func (e TaskEnqueuer) ToPaid(ctx context.Context, taskID string, attempt int, payload []byte) error {
	p, err := tasks.ParseCropPayload(payload)
	if err != nil {
		return err
	}
	p.Rescue = &tasks.Rescue{From: taskID, Attempt: attempt}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	opts := append(tasks.TaskOptionsFor(p, e.Options), asynq.TaskID(PaidTaskID(p.RequestID, attempt)))
	_, err = e.Client.EnqueueContext(ctx, asynq.NewTask(tasks.TypeCrop, b), opts...)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue the paid task of %s: %w", p.RequestID, err)
	}
	return nil
}

// PaidTaskID is the asynq task id of the paid task a free one hands
// requestID's attempt to.
func PaidTaskID(requestID string, attempt int) string {
	return fmt.Sprintf("%s~paid-%d", requestID, attempt)
}

// Requeue runs again, as a task of its own, the crop whose worker stopped
// renewing its crop lease (package lease): asynq would put the task back only
// after its own 30 s task lease and a once-a-minute recoverer. The new task
// carries the old one's payload and remaining retries, and takes the
// request over on its first run unless the old task moved on meanwhile; the
// old task, when asynq runs it again, finds the request owned and stops.
// A task that is no longer running (finished, or already put back by
// asynq) needs nothing.
func (e TaskEnqueuer) Requeue(ctx context.Context, h lease.Holder) error {
	if e.Inspector == nil {
		return errors.New("backlog: requeue needs an asynq inspector")
	}
	info, err := e.Inspector.GetTaskInfo(h.Queue, h.TaskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("read task %s: %w", h.TaskID, err)
	case info.State != asynq.TaskStateActive:
		return nil
	}
	p, err := tasks.ParseCropPayload(info.Payload)
	if err != nil {
		return &BadEntryError{Err: err}
	}
	running := info.Retried + 1
	if p.Rescue != nil {
		running += p.Rescue.Attempt
	}
	if running != h.Attempt {
		return nil // the crop lease was an earlier run's; this one is live
	}
	p.Rescue = &tasks.Rescue{From: h.TaskID, Attempt: h.Attempt}
	b, err := json.Marshal(p)
	if err != nil {
		return &BadEntryError{Err: err}
	}
	opts := []asynq.Option{
		asynq.TaskID(tasks.RescueTaskID(p.RequestID, h.Attempt)),
		asynq.Queue(h.Queue),
		// The attempt that died counts as one.
		asynq.MaxRetry(max(info.MaxRetry-info.Retried-1, 0)),
	}
	if info.Timeout > 0 {
		opts = append(opts, asynq.Timeout(info.Timeout))
	}
	if info.Retention > 0 {
		opts = append(opts, asynq.Retention(info.Retention))
	}
	_, err = e.Client.EnqueueContext(ctx, asynq.NewTask(tasks.TypeCrop, b), opts...)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue rescue of %s: %w", h.TaskID, err)
	}
	return nil
}
