package workertest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/internal/worker/workertest"
	"github.com/cropq/cropq/status"
)

// store is what both status stores offer the test.
type store interface {
	Create(ctx context.Context, rec status.Record) (status.Record, bool, error)
	Get(ctx context.Context, id string) (status.Record, error)
	Transition(ctx context.Context, id string, u records.Update) (status.Record, error)
	Cancel(ctx context.Context, id string) (status.Record, error)
}

// seen is what one step of the script leaves: how its error classifies, and
// the record's fields the handler decides on.
type seen struct {
	Err        string // "", "stale", "not_found", "transition from <state>"
	State      status.State
	Attempt    int
	Task       string
	ErrorCode  string
	PaidCalls  int
	Usage      int
	Recrops    int
	Checkpoint string // its result URL
	Stored     bool
	History    []status.State
}

type step struct {
	name string
	do   func(ctx context.Context, s store) (status.Record, error)
	want seen
}

func classify(err error) string {
	var te *status.TransitionError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, records.ErrStaleAttempt):
		return "stale"
	case errors.Is(err, status.ErrNotFound):
		return "not_found"
	case errors.As(err, &te):
		return "transition from " + string(te.From)
	default:
		return err.Error()
	}
}

func observe(rec status.Record, err error) seen {
	s := seen{Err: classify(err), State: rec.State, Attempt: rec.Attempt, Task: rec.Task, ErrorCode: rec.ErrorCode,
		PaidCalls: rec.PaidCalls, Usage: rec.Usage, Recrops: rec.ExpiredRecrops, Stored: rec.Stored != nil}
	if rec.Checkpoint != nil {
		s.Checkpoint = rec.Checkpoint.ResultURL
	}
	for _, h := range rec.History {
		s.History = append(s.History, h.State)
	}
	return s
}

func transition(id string, u records.Update) func(context.Context, store) (status.Record, error) {
	return func(ctx context.Context, s store) (status.Record, error) { return s.Transition(ctx, id, u) }
}

// script is one request's life through the rules the handler relies on:
// a record created by its first start (no queued entry), attempts in order, checkpoints counted as paid calls, an expired one
// replaced, a rescue taking the request over, terminal states final.
func script() []step {
	const id, task, rescue = "req-1", "req-1", "req-1~rescue-2"
	cp := func(url string) *status.Checkpoint {
		return &status.Checkpoint{ResultURL: url, ExpiresAt: time.Now().Add(time.Minute), Width: 8, Height: 8, APIRequestID: "api"}
	}
	q, r, c, rt, ok := status.Queued, status.Running, status.Cropped, status.Retrying, status.Succeeded
	return []step{
		{"an unknown id", func(ctx context.Context, s store) (status.Record, error) { return s.Get(ctx, id) },
			seen{Err: "not_found"}},
		{"only a start creates a missing record", transition(id, records.Update{To: c, Attempt: 1, Task: task}),
			seen{Err: "not_found"}},
		{"a start creates it", transition(id, records.Update{To: r, Attempt: 1, Task: task}),
			seen{State: r, Attempt: 1, History: []status.State{r}}},
		{"a paid answer is checkpointed and counted", transition(id, records.Update{To: c, Attempt: 1, Task: task, Checkpoint: cp("u1"), PaidUsage: 2}),
			seen{State: c, Attempt: 1, PaidCalls: 1, Usage: 2, Checkpoint: "u1", History: []status.State{r, c}}},
		{"a failed copy keeps the checkpoint", transition(id, records.Update{To: rt, Attempt: 1, Task: task, ErrorCode: "storage_upload"}),
			seen{State: rt, Attempt: 1, ErrorCode: "storage_upload", PaidCalls: 1, Usage: 2, Checkpoint: "u1", History: []status.State{r, c, rt}}},
		{"an older attempt is stale", transition(id, records.Update{To: r, Attempt: 0, Task: task}),
			seen{Err: "stale"}},
		{"the next attempt", transition(id, records.Update{To: r, Attempt: 2, Task: task}),
			seen{State: r, Attempt: 2, ErrorCode: "storage_upload", PaidCalls: 1, Usage: 2, Checkpoint: "u1", History: []status.State{r, c, rt, r}}},
		{"an expired checkpoint replaced", transition(id, records.Update{To: c, Attempt: 2, Task: task, Checkpoint: cp("u2"), ClearCheckpoint: true, PaidUsage: 2}),
			seen{State: c, Attempt: 2, ErrorCode: "storage_upload", PaidCalls: 2, Usage: 4, Recrops: 1, Checkpoint: "u2", History: []status.State{r, c, rt, r, c}}},
		{"a rescue takes the request over", transition(id, records.Update{To: r, Attempt: 3, Task: rescue, Takeover: &records.Takeover{From: task, Attempt: 2}}),
			seen{State: r, Attempt: 3, Task: rescue, ErrorCode: "storage_upload", PaidCalls: 2, Usage: 4, Recrops: 1, Checkpoint: "u2", History: []status.State{r, c, rt, r, c, r}}},
		{"the rescued task is stale, whatever its attempt", transition(id, records.Update{To: rt, Attempt: 4, Task: task, ErrorCode: "x"}),
			seen{Err: "stale"}},
		{"stored: the checkpoint is dropped and the error cleared", transition(id, records.Update{To: ok, Attempt: 3, Task: rescue, Stored: &status.Stored{Bucket: "b", Key: "k"}}),
			seen{State: ok, Attempt: 3, Task: rescue, PaidCalls: 2, Usage: 4, Recrops: 1, Stored: true, History: []status.State{r, c, rt, r, c, r, ok}}},
		{"terminal is final; the record is returned with the refusal", transition(id, records.Update{To: status.Failed, Attempt: 3, Task: rescue}),
			seen{Err: "transition from succeeded", State: ok, Attempt: 3, Task: rescue, PaidCalls: 2, Usage: 4, Recrops: 1, Stored: true, History: []status.State{r, c, rt, r, c, r, ok}}},
		{"created queued", func(ctx context.Context, s store) (status.Record, error) {
			rec, _, err := s.Create(ctx, status.Record{RequestID: "req-2"})
			return rec, err
		}, seen{State: q, History: []status.State{q}}},
		{"canceled from queued", func(ctx context.Context, s store) (status.Record, error) { return s.Cancel(ctx, "req-2") },
			seen{State: status.Canceled, History: []status.State{q, status.Canceled}}},
		{"a canceled request does not start", transition("req-2", records.Update{To: r, Attempt: 1, Task: "req-2"}),
			seen{Err: "transition from canceled", State: status.Canceled, History: []status.State{q, status.Canceled}}},
	}
}

func run(t *testing.T, s store) []seen {
	t.Helper()
	var out []seen
	for _, st := range script() {
		rec, err := st.do(context.Background(), s)
		got := observe(rec, err)
		assert.Equal(t, st.want, got, st.name)
		out = append(out, got)
	}
	return out
}

// The fake follows the status store's rules (records.Apply, shared), and
// the Redis store agrees with it step by step (without -short).
func TestStatusesFollowTheStoresRules(t *testing.T) {
	fake := run(t, workertest.NewStatuses())
	t.Run("the Redis store agrees", func(t *testing.T) {
		srv := testenv.Redis(t)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		require.Equal(t, fake, run(t, records.NewStore(rdb, status.Config{})))
	})
}

func TestStatusesRefuseWrites(t *testing.T) {
	s := workertest.NewStatuses()
	ctx := context.Background()
	_, err := s.Transition(ctx, "r", records.Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	oom := errors.New("OOM")
	s.Refuse = workertest.RefuseWrites(oom, status.Cropped)
	_, err = s.Transition(ctx, "r", records.Update{To: status.Cropped, Attempt: 1, Checkpoint: &status.Checkpoint{ResultURL: "u"}})
	require.ErrorIs(t, err, oom)
	rec, err := s.Transition(ctx, "r", records.Update{To: status.Retrying, Attempt: 1})
	require.NoError(t, err, "only the states named are refused")
	assert.Zero(t, rec.PaidCalls, "a refused write changes nothing")
	assert.Len(t, s.Updates("r"), 2)
}
