package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/internal/worker/workertest"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// The handler's decisions, through in-memory fakes (package workertest):
// the fast tier of its tests. The same decisions against real Redis and
// MinIO are in policy_integration_test.go and lease_integration_test.go.

// outcome is how asynq takes what ProcessRun returned.
type outcome string

const (
	done     outcome = "done"      // nil: the task is complete
	failed   outcome = "failed"    // SkipRetry: archived, no retry
	retry    outcome = "retry"     // retried, spending one of MaxRetry
	handBack outcome = "hand-back" // retried without spending MaxRetry (IsFailure false)
)

func outcomeOf(err error) outcome {
	switch {
	case err == nil:
		return done
	case errors.Is(err, asynq.SkipRetry):
		return failed
	case worker.IsFailure(err):
		return retry
	default:
		return handBack
	}
}

// rig is one worker process: the fakes and a handler over them.
type rig struct {
	t      *testing.T
	f      *workertest.Fakes
	h      *worker.Handler
	ctx    context.Context
	cancel context.CancelFunc // the task's context: canceled as asynq does at shutdown
	staged int                // paid calls on records staged by the test, not made through the fake API
}

const (
	id        = "sku-1-main"
	imageURL  = "https://images.example/sku-1.jpg"
	callback  = "https://hooks.example/crops"
	maxRetry  = 3
	firstURL  = "https://results.test/crop-1.png" // the fake API's first answer
	earlyURL  = "https://results.test/earlier.png"
	earlyCall = "api-earlier"
)

func request(reqID string) tasks.CropPayload {
	return tasks.CropPayload{Version: tasks.PayloadVersion, Request: tasks.Request{
		RequestID: reqID, ImageURL: imageURL, Params: tasks.Params{TargetWidth: 800, TargetHeight: 600, CallbackURL: callback}}}
}

func encode(t *testing.T, p tasks.CropPayload) []byte {
	t.Helper()
	b, err := json.Marshal(p)
	require.NoError(t, err)
	return b
}

// first is the first run of a request's own task; last its last.
func first(reqID string) worker.TaskRun {
	return worker.TaskRun{TaskID: reqID, Queue: tasks.DefaultQueue, MaxRetry: maxRetry}
}

func last(reqID string) worker.TaskRun {
	r := first(reqID)
	r.Retried = maxRetry
	return r
}

func second(reqID string) worker.TaskRun {
	r := first(reqID)
	r.Retried = 1
	return r
}

// process runs one attempt of p.
func (r *rig) process(run worker.TaskRun, p tasks.CropPayload) error {
	return r.h.ProcessRun(r.ctx, run, encode(r.t, p))
}

// queued records p as a producer does before enqueuing it.
func (r *rig) queued(p tasks.CropPayload) {
	_, created, err := r.f.Statuses.Create(context.Background(), status.Record{RequestID: p.RequestID, Params: tasks.Params{CallbackURL: p.CallbackURL}})
	require.NoError(r.t, err)
	require.True(r.t, created)
}

// paidEarlier leaves id's record as an attempt that paid, checkpointed
// and failed to copy leaves it.
func (r *rig) paidEarlier() {
	r.staged = 1
	now := time.Now().UTC()
	r.f.Statuses.Put(status.Record{RequestID: id, State: status.Retrying, Attempt: 1, CreatedAt: now, UpdatedAt: now,
		ErrorCode: string(worker.CodeStorageUpload), PaidCalls: 1, Usage: 1,
		Checkpoint: &status.Checkpoint{ResultURL: earlyURL, ExpiresAt: now.Add(time.Minute), Lifetime: time.Minute, Width: 800, Height: 600, APIRequestID: earlyCall}})
}

var (
	rateLimited   = &cropapi.APIError{ResCode: cropapi.CodeRateLimited, Message: "QPS limit"}
	systemError   = &cropapi.APIError{ResCode: cropapi.CodeSystemError, Message: "system error"}
	invalid       = &cropapi.APIError{ResCode: cropapi.CodeInvalidInput, Message: "imageUrl"}
	errBucketDown = errors.New("dial tcp 127.0.0.1:9000: connection refused")
	errRedisOOM   = errors.New("OOM command not allowed when used memory > 'maxmemory'")
)

// want is what one attempt must leave behind.
type want struct {
	outcome   outcome
	state     status.State
	code      string // the record's error code
	paidCalls int    // the record's count of paid calls
	apiCalls  int    // calls made to the API (paid or not), this attempt and the staging's
	stored    bool   // the result is stored at the request's key
	notified  int    // callbacks
}

// handlerCase is one attempt of request(id), after its staging.
type handlerCase struct {
	name    string
	payload func(*tasks.CropPayload) // changes to request(id)
	config  func(*worker.HandlerConfig)
	stage   func(t *testing.T, r *rig) // before the attempt under test
	run     worker.TaskRun             // default first(id)
	want    want
	check   func(t *testing.T, r *rig, rec status.Record) // what else must hold
}

func TestHandlerDecisions(t *testing.T) {
	noReuse := func(cfg *worker.HandlerConfig) { cfg.Dedup, cfg.Reuse = nil, nil } // TestHandlerReuse's
	tests := []handlerCase{
		{
			name: "first attempt pays once and stores",
			stage: func(t *testing.T, r *rig) {
				r.queued(request(id))
			},
			want: want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, "api-1", rec.Stored.APIRequestID)
				assert.Nil(t, rec.Checkpoint, "stored: the URL is no longer needed")
				assert.Equal(t, 1, r.f.Quota.Waits(), "one token of the shared quota")
				ok, limited := r.f.Quota.Observed()
				assert.Equal(t, [2]int{1, 0}, [2]int{ok, limited})
				assert.Zero(t, r.f.Leases.Held(), "the crop's lease is released")
				assert.Len(t, r.f.Leases.Acquired(), 1)
				assert.Equal(t, []status.State{status.Running, status.Cropped, status.Succeeded}, moves(r.f.Statuses.Updates(id)))
			},
		},
		{
			name: "a task whose record Redis lost runs, its record written again from the payload",
			payload: func(p *tasks.CropPayload) {
				p.BatchID, p.Tenant, p.EnqueuedAt = "cat", "acme", time.Now().Add(-time.Hour).UTC()
			},
			want: want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				p := request(id)
				p.BatchID, p.Tenant = "cat", "acme"
				seed := worker.RecordOf(p)
				assert.Equal(t, "cat", rec.BatchID, "counted in its batch again")
				assert.Equal(t, "acme", rec.Tenant)
				assert.Equal(t, imageURL, rec.SourceURL)
				assert.NotEmpty(t, rec.Fingerprint)
				assert.Equal(t, seed.Fingerprint, rec.Fingerprint, "the same id submitted again is still known")
				assert.Less(t, rec.CreatedAt, time.Now().Add(-time.Minute), "accepted when its task was")
			},
		},
		{
			name: "a checkpoint from an earlier attempt is copied, not paid again",
			stage: func(t *testing.T, r *rig) {
				r.paidEarlier()
			},
			run:  second(id),
			want: want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 0, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, earlyCall, rec.Stored.APIRequestID)
				assert.Equal(t, []string{earlyURL}, r.f.Copier.Copied())
				assert.Zero(t, r.f.Quota.Waits(), "no token taken for a call not made")
			},
		},
		{
			name: "an expired checkpoint (download refused 403) is cropped again, once",
			stage: func(t *testing.T, r *rig) {
				r.paidEarlier()
				r.f.Copier.Expire(earlyURL)
			},
			run:  second(id),
			want: want{outcome: done, state: status.Succeeded, paidCalls: 2, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, 1, rec.ExpiredRecrops)
				assert.Equal(t, "api-1", rec.Stored.APIRequestID)
				assert.Equal(t, 2, r.f.Copier.Copies())
			},
		},
		{
			name: "a re-cropped result that expires too is not paid a third time in the attempt",
			stage: func(t *testing.T, r *rig) {
				r.paidEarlier()
				r.f.Copier.Expire(earlyURL)
				r.f.Copier.Expire(firstURL)
			},
			run:  second(id),
			want: want{outcome: retry, state: status.Retrying, code: string(worker.CodeResultExpired), paidCalls: 2, apiCalls: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, firstURL, rec.Checkpoint.ResultURL, "the new answer is checkpointed for the next attempt")
			},
		},
		{
			name: "a fresh result refused as expired: checkpointed for the next attempt, not paid again in this one",
			stage: func(t *testing.T, r *rig) {
				r.f.Copier.Expire(firstURL)
			},
			want: want{outcome: retry, state: status.Retrying, code: string(worker.CodeResultExpired), paidCalls: 1, apiCalls: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, firstURL, rec.Checkpoint.ResultURL)
			},
		},
		{
			name: "storage gate open: handed back unpaid, not a failure",
			stage: func(t *testing.T, r *rig) {
				// Another request's upload fails: this worker's gate opens.
				r.f.Copier.SetDown(errBucketDown)
				other := request("sku-0")
				require.Equal(t, retry, outcomeOf(r.process(first(other.RequestID), other)))
				r.queued(request(id))
			},
			want: want{outcome: handBack, state: status.Retrying, code: string(worker.CodeStorageUnavailable), apiCalls: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, 1, r.f.Cropper.Paid(), "only the request that opened the gate paid")
				assert.Positive(t, r.f.Copier.Checks(), "the bucket was checked before giving up")
			},
		},
		{
			name: "an expired checkpoint while the bucket is unreachable is not paid again",
			stage: func(t *testing.T, r *rig) {
				r.paidEarlier()
				r.f.Copier.Expire(earlyURL)
				r.f.Copier.SetDown(errBucketDown)
			},
			run:  second(id),
			want: want{outcome: handBack, state: status.Retrying, code: string(worker.CodeStorageUnavailable), paidCalls: 1},
		},
		{
			name: "storage gate on the last attempt: failed, since asynq archives it anyway",
			stage: func(t *testing.T, r *rig) {
				r.f.Copier.SetDown(errBucketDown)
				other := request("sku-0")
				require.Equal(t, retry, outcomeOf(r.process(first(other.RequestID), other)))
				r.queued(request(id))
			},
			run:  last(id),
			want: want{outcome: failed, state: status.Failed, code: string(worker.CodeStorageUnavailable), apiCalls: 1, notified: 1},
		},
		{
			name:  "API error before the last attempt: retrying, counted",
			stage: func(t *testing.T, r *rig) { r.f.Cropper.Fail = workertest.FailCalls(systemError) },
			want:  want{outcome: retry, state: status.Retrying, code: "500", apiCalls: 1},
		},
		{
			name:  "API error on the last attempt: failed with the API's code",
			stage: func(t *testing.T, r *rig) { r.f.Cropper.Fail = workertest.FailCalls(systemError) },
			run:   last(id),
			want:  want{outcome: failed, state: status.Failed, code: "500", apiCalls: 1, notified: 1},
		},
		{
			name:  "permanent API error: failed on the first attempt",
			stage: func(t *testing.T, r *rig) { r.f.Cropper.Fail = workertest.FailCalls(invalid) },
			want:  want{outcome: failed, state: status.Failed, code: "700", apiCalls: 1, notified: 1},
		},
		{
			name: "shutdown during the call, on the last attempt: retrying, not failed",
			stage: func(t *testing.T, r *rig) {
				r.f.Cropper.Fail = func(context.Context, int, cropapi.Request) error {
					r.cancel() // asynq cancels running tasks at its shutdown timeout
					return nil
				}
			},
			run:  last(id),
			want: want{outcome: retry, state: status.Retrying, code: "transport", apiCalls: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Contains(t, rec.ErrorMessage, context.Canceled.Error())
				assert.Zero(t, r.f.Cropper.Paid())
			},
		},
		{
			name: "canceled while queued: nothing paid, input removed, callback sent",
			payload: func(p *tasks.CropPayload) {
				p.ImageURL = ""
			},
			stage: func(t *testing.T, r *rig) {
				r.queued(request(id))
				_, err := r.f.Statuses.Cancel(context.Background(), id)
				require.NoError(t, err)
			},
			want: want{outcome: done, state: status.Canceled, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.False(t, r.f.Inputs.Has("inputs", "sku-1.png"), "the claim-checked image is removed")
				assert.Zero(t, r.f.Quota.Waits())
			},
		},
		{
			name: "already succeeded: nothing to do",
			stage: func(t *testing.T, r *rig) {
				r.queued(request(id))
				require.NoError(t, r.process(first(id), request(id)))
			},
			run:  second(id),
			want: want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, 1, rec.Attempt, "the late attempt wrote nothing")
				assert.Equal(t, 1, r.f.Copier.Copies())
			},
		},
		{
			name: "stale attempt: a newer attempt owns the request; quiet stop",
			stage: func(t *testing.T, r *rig) {
				r.paidEarlier()
				rec, err := r.f.Statuses.Get(context.Background(), id)
				require.NoError(t, err)
				rec.Attempt = 3
				r.f.Statuses.Put(rec)
			},
			run:  second(id),
			want: want{outcome: done, state: status.Retrying, code: string(worker.CodeStorageUpload), paidCalls: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, 3, rec.Attempt)
				assert.Zero(t, r.f.Copier.Copies())
			},
		},
		{
			name: "rescued: the old task finds the request another task's and stops quietly",
			stage: func(t *testing.T, r *rig) {
				r.queued(request(id))
				// The rescue task took the request over and is cropping it.
				rescue := worker.TaskRun{TaskID: tasks.RescueTaskID(id, 1), Queue: tasks.DefaultQueue, MaxRetry: maxRetry}
				_, err := r.f.Statuses.Transition(context.Background(), id, records.Update{To: status.Running, Attempt: 2,
					Task: rescue.TaskID, Takeover: &records.Takeover{From: id, Attempt: 1}})
				require.NoError(t, err)
			},
			want: want{outcome: done, state: status.Running},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, tasks.RescueTaskID(id, 1), rec.Task)
				assert.Equal(t, 2, rec.Attempt)
			},
		},
		{
			name: "lease taken while the worker was frozen: it wakes and does not pay",
			stage: func(t *testing.T, r *rig) {
				r.queued(request(id))
				// The worker froze after marking the crop running; the
				// rescuer took its lease meanwhile, and it woke before its
				// renewal could tell it.
				r.f.Statuses.Refuse = func(_ string, u records.Update) error {
					if u.To == status.Running {
						require.Equal(t, 1, r.f.Leases.Take(id))
					}
					return nil
				}
			},
			want: want{outcome: handBack, state: status.Retrying, code: string(worker.CodeLeaseLost)},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, rec.Attempt, r.f.Leases.Acquired()[0].Attempt)
				assert.Equal(t, 1, r.f.Quota.Waits(), "the token comes first; the lease is asked right before paying")
			},
		},
		{
			name: "lease lost and the renewal noticed: the attempt's context ends, no payment",
			stage: func(t *testing.T, r *rig) {
				r.queued(request(id))
				r.f.Statuses.Refuse = func(_ string, u records.Update) error {
					if u.To == status.Running {
						r.f.Leases.Take(id)
						require.Equal(t, 1, r.f.Leases.Renew())
					}
					return nil
				}
			},
			want: want{outcome: handBack, state: status.Retrying, code: string(worker.CodeLeaseLost)},
		},
		{
			name: "rate limited: retried in place through the quota, then handed back, not a failure",
			stage: func(t *testing.T, r *rig) {
				r.f.Cropper.Fail = workertest.FailCalls(rateLimited, rateLimited, rateLimited)
			},
			want: want{outcome: handBack, state: status.Retrying, code: "501", apiCalls: 3},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, 3, r.f.Quota.Waits(), "a token before each call")
				_, limited := r.f.Quota.Observed()
				assert.Equal(t, 3, limited, "every rate limit slows the fleet down")
			},
		},
		{
			name: "rate limited once: the call is made again in place and paid once",
			stage: func(t *testing.T, r *rig) {
				r.f.Cropper.Fail = workertest.FailCalls(rateLimited)
			},
			want: want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 2, stored: true, notified: 1},
		},
		{
			name: "rate limited on the last attempt: failed with the API's code",
			stage: func(t *testing.T, r *rig) {
				r.f.Cropper.Fail = workertest.FailCalls(rateLimited, rateLimited, rateLimited)
			},
			run:  last(id),
			want: want{outcome: failed, state: status.Failed, code: "501", apiCalls: 3, notified: 1},
		},
		{
			name: "no quota token in time: handed back with the quota's delay, nothing called",
			stage: func(t *testing.T, r *rig) {
				r.f.Quota.Deny = func(int) error { return &workertest.Deferred{For: 3 * time.Second} }
			},
			want: want{outcome: handBack, state: status.Retrying, code: string(worker.CodeQuota)},
			check: func(t *testing.T, r *rig, rec status.Record) {
				err := r.process(first("sku-2"), request("sku-2"))
				assert.Equal(t, 3*time.Second, worker.Backoff{}.Delay(0, err, nil))
			},
		},
		{
			name: "a request's own bucket missing: failed before paying",
			payload: func(p *tasks.CropPayload) {
				p.Bucket = "no-such-bucket"
			},
			want: want{outcome: failed, state: status.Failed, code: string(worker.CodeBucket), notified: 1},
		},
		{
			name: "claim-checked image: sent as base64, removed once stored",
			payload: func(p *tasks.CropPayload) {
				p.ImageURL = ""
			},
			want: want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				req := r.f.Cropper.Requests()[0]
				assert.NotEmpty(t, req.ImageBase64)
				assert.Empty(t, req.ImageURL)
				assert.False(t, r.f.Inputs.Has("inputs", "sku-1.png"))
			},
		},
		{
			name: "Redis refuses the checkpoint: the paid answer is kept and recorded next attempt, unpaid",
			stage: func(t *testing.T, r *rig) {
				r.queued(request(id))
				r.f.Statuses.Refuse = workertest.RefuseWrites(errRedisOOM, status.Cropped)
				require.Equal(t, retry, outcomeOf(r.process(first(id), request(id))))
				require.Equal(t, 1, r.f.Cropper.Paid())
				// While its answers cannot be recorded, this worker pays for
				// nothing more.
				other := request("sku-2")
				other.ImageURL = "https://images.example/sku-2.jpg"
				err := r.process(first(other.RequestID), other)
				require.Equal(t, handBack, outcomeOf(err), "%v", err)
				require.ErrorAs(t, err, new(*worker.StatusUnavailableError))
				require.Equal(t, 1, r.f.Cropper.Calls())
				r.f.Statuses.Refuse = nil
			},
			run:  second(id),
			want: want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, "api-1", rec.Stored.APIRequestID, "the answer paid for in the first attempt")
			},
		},
	}
	for i := range tests {
		if tests[i].config == nil {
			tests[i].config = noReuse
		}
	}
	runCases(t, tests)
}

func runCases(t *testing.T, tests []handlerCase) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := workertest.New()
			cfg := f.Config()
			if tc.config != nil {
				tc.config(&cfg)
			}
			ctx, cancel := context.WithCancel(t.Context())
			r := &rig{t: t, f: f, h: f.Handler(cfg), ctx: ctx, cancel: cancel}
			p := request(id)
			if tc.payload != nil {
				tc.payload(&p)
			}
			if p.ImageURL == "" {
				p.Input = f.Inputs.Put("inputs", "sku-1.png", []byte("a png"))
			}
			if tc.stage != nil {
				tc.stage(t, r)
			}
			run := tc.run
			if run.TaskID == "" {
				run = first(id)
			}

			start := time.Now()
			err := r.process(run, p)
			took := time.Since(start)

			assert.Equal(t, tc.want.outcome, outcomeOf(err), "ProcessRun: %v", err)
			rec, gerr := f.Statuses.Get(context.Background(), id)
			require.NoError(t, gerr)
			assert.Equal(t, tc.want.state, rec.State)
			assert.Equal(t, tc.want.code, rec.ErrorCode)
			assert.Equal(t, tc.want.paidCalls, rec.PaidCalls, "the record's paid calls")
			assert.Equal(t, tc.want.apiCalls, f.Cropper.Calls(), "calls to the API")
			assert.Equal(t, f.Cropper.Paid()+r.staged, paidInRecords(t, f, id, "sku-0", "sku-2"), "every paid call is on a record")
			_, stored := f.Copier.Object("results", "crops/"+id+"/800x600.png")
			assert.Equal(t, tc.want.stored, stored, "stored at the request's key")
			assert.Equal(t, tc.want.stored, rec.Stored != nil)
			assert.Len(t, notifications(f, id), tc.want.notified, "callbacks")
			assert.Zero(t, f.Leases.Held(), "every lease released")
			assert.Less(t, took, time.Second, "a fast test")
			if tc.check != nil {
				tc.check(t, r, rec)
			}
		})
	}
}

func moves(us []records.Update) []status.State {
	out := make([]status.State, len(us))
	for i, u := range us {
		out[i] = u.To
	}
	return out
}

// paidInRecords adds up the paid calls the records of ids account for
// (missing records count nothing).
func paidInRecords(t *testing.T, f *workertest.Fakes, ids ...string) int {
	t.Helper()
	n := 0
	for _, id := range ids {
		rec, err := f.Statuses.Get(context.Background(), id)
		if errors.Is(err, status.ErrNotFound) {
			continue
		}
		require.NoError(t, err)
		n += rec.PaidCalls
	}
	return n
}

func notifications(f *workertest.Fakes, id string) []workertest.Notification {
	var out []workertest.Notification
	for _, n := range f.Notifier.Sent() {
		if n.Record.RequestID == id {
			out = append(out, n)
		}
	}
	return out
}

func TestUndecodablePayloadIsNotRetried(t *testing.T) {
	f := workertest.New()
	err := f.Handler(f.Config()).ProcessRun(t.Context(), first(id), []byte(`{"v":1,"requestId":`))
	assert.Equal(t, failed, outcomeOf(err))
	assert.Zero(t, f.Cropper.Calls())
	_, gerr := f.Statuses.Get(context.Background(), id)
	assert.ErrorIs(t, gerr, status.ErrNotFound, "no trusted id, no record")
}

func TestHandlerReuse(t *testing.T) {
	twin := request("sku-0") // the same image and size: the same crop key
	key := func(t *testing.T, r *rig) string {
		k, err := r.f.Dedup.Key(context.Background(), request(id))
		require.NoError(t, err)
		require.NotEmpty(t, k)
		return k
	}
	twinStores := func(t *testing.T, r *rig) {
		require.NoError(t, r.process(first(twin.RequestID), twin))
	}
	runCases(t, []handlerCase{
		{
			name:  "a result stored under the same crop key is copied server-side, unpaid",
			stage: twinStores,
			want:  want{outcome: done, state: status.Succeeded, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, twin.RequestID, rec.ReusedFrom)
				assert.Equal(t, "api-1", rec.Stored.APIRequestID, "the twin's answer")
				assert.Equal(t, 1, r.f.Copier.Reused())
				assert.Equal(t, 1, r.f.Dedup.Saved(worker.SavedReused))
				assert.Equal(t, 1, r.f.Quota.Waits(), "no token taken but the twin's")
			},
		},
		{
			name: "the stored result is gone: paid for, and indexed in its place",
			stage: func(t *testing.T, r *rig) {
				twinStores(t, r)
				r.f.Copier.Delete("results", "crops/"+twin.RequestID+"/800x600.png")
			},
			want: want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 2, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				entry, ok := r.f.Dedup.Entry(key(t, r))
				require.True(t, ok)
				assert.Equal(t, id, entry.RequestID)
				assert.Zero(t, r.f.Dedup.Saved(worker.SavedReused))
			},
		},
		{
			name: "a twin is paying for the same crop: handed back, not a failure, nothing paid",
			stage: func(t *testing.T, r *rig) {
				r.f.Dedup.Hold(key(t, r), twin.RequestID)
			},
			want: want{outcome: handBack, state: status.Retrying, code: string(worker.CodeCoalescing)},
			check: func(t *testing.T, r *rig, rec status.Record) {
				err := r.process(second(id), request(id))
				var ce *worker.CoalescingError
				require.ErrorAs(t, err, &ce)
				assert.Equal(t, twin.RequestID, ce.Holder)
				assert.Equal(t, time.Second, worker.Backoff{}.Delay(0, err, nil), "CoalesceDelay, not the backoff")
			},
		},
		{
			name: "the twin waited for stored its result: reused, counted as coalesced",
			stage: func(t *testing.T, r *rig) {
				held := r.f.Dedup.Hold(key(t, r), twin.RequestID)
				require.Equal(t, handBack, outcomeOf(r.process(first(id), request(id))))
				held.Release(context.Background()) // the twin's worker lets go, then runs it
				twinStores(t, r)
			},
			run:  second(id),
			want: want{outcome: done, state: status.Succeeded, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, twin.RequestID, rec.ReusedFrom)
				assert.Equal(t, 1, r.f.Dedup.Saved(worker.SavedCoalesced))
			},
		},
		{
			name:    "another tenant's result is reused without naming its request: an opaque reference, which resolves",
			payload: func(p *tasks.CropPayload) { p.Tenant = "acme" },
			stage: func(t *testing.T, r *rig) {
				g := request(twin.RequestID)
				g.Tenant = "globex"
				require.NoError(t, r.process(first(g.RequestID), g))
				entry, ok := r.f.Dedup.Entry(key(t, r))
				require.True(t, ok)
				require.Equal(t, "globex", entry.Tenant, "the index knows whose result it is")
			},
			want: want{outcome: done, state: status.Succeeded, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Regexp(t, `^ref/[0-9a-f]{20}$`, rec.ReusedFrom)
				src, ok := r.f.Dedup.Resolve(rec.ReusedFrom)
				assert.True(t, ok)
				assert.Equal(t, twin.RequestID, src, "an operator resolves it")
				b, err := json.Marshal(rec)
				require.NoError(t, err)
				assert.NotContains(t, string(b), twin.RequestID, "nothing in the record names globex's request")
				assert.Equal(t, 1, r.f.Dedup.Saved(worker.SavedReused))
			},
		},
		{
			name: "an entry written before entries named their tenant is foreign in global scope",
			stage: func(t *testing.T, r *rig) {
				twinStores(t, r)
				entry, _ := r.f.Dedup.Entry(key(t, r))
				entry.Tenant = ""
				require.NoError(t, r.f.Dedup.Remember(context.Background(), key(t, r), entry))
			},
			want: want{outcome: done, state: status.Succeeded, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.True(t, strings.HasPrefix(rec.ReusedFrom, "ref/"), rec.ReusedFrom)
			},
		},
		{
			name:    "another tenant's twin is paying: handed back, its request not named",
			payload: func(p *tasks.CropPayload) { p.Tenant = "acme" },
			stage: func(t *testing.T, r *rig) {
				_, _, err := r.f.Statuses.Create(context.Background(), status.Record{RequestID: twin.RequestID, Params: tasks.Params{Tenant: "globex"}})
				require.NoError(t, err)
				r.f.Dedup.Hold(key(t, r), twin.RequestID)
			},
			want: want{outcome: handBack, state: status.Retrying, code: string(worker.CodeCoalescing)},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.NotContains(t, rec.ErrorMessage, twin.RequestID)
				for _, tr := range rec.History {
					assert.NotContains(t, tr.Message, twin.RequestID)
				}
			},
		},
		{
			name: "the same tenant's twin is paying: named",
			stage: func(t *testing.T, r *rig) {
				r.queued(twin)
				r.f.Dedup.Hold(key(t, r), twin.RequestID)
			},
			want: want{outcome: handBack, state: status.Retrying, code: string(worker.CodeCoalescing)},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Contains(t, rec.ErrorMessage, twin.RequestID)
			},
		},
		{
			name:    "a request that opted out pays, even with a result to reuse",
			payload: func(p *tasks.CropPayload) { p.Dedup = new(false) },
			stage:   twinStores,
			want:    want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 2, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Empty(t, rec.ReusedFrom)
			},
		},
		{
			name: "a checkpoint already paid for is stored, not reused, and indexed",
			stage: func(t *testing.T, r *rig) {
				twinStores(t, r)
				r.paidEarlier()
			},
			run:  second(id),
			want: want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Empty(t, rec.ReusedFrom)
				assert.Equal(t, earlyCall, rec.Stored.APIRequestID)
				entry, ok := r.f.Dedup.Entry(key(t, r))
				require.True(t, ok)
				assert.Equal(t, id, entry.RequestID)
			},
		},
	})
}
