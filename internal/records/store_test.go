package records_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

func newStore(t *testing.T, cfg status.Config) (*records.Store, redis.UniversalClient) {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return records.NewStore(rdb, cfg), rdb
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	st, rdb := newStore(t, status.Config{Prefix: "t:", TTL: time.Hour})

	rec, created, err := st.Create(ctx, status.Record{RequestID: "r1", Params: tasks.Params{TargetWidth: 800, TargetHeight: 600}, Source: "url"})
	require.NoError(t, err)
	assert.True(t, created)
	assert.Equal(t, status.Queued, rec.State)

	_, created, err = st.Create(ctx, status.Record{RequestID: "r1", Params: tasks.Params{TargetWidth: 1}}) // same id again
	require.NoError(t, err)
	assert.False(t, created)

	_, err = st.Transition(ctx, "r1", records.Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	exp := time.Now().Add(time.Minute).UTC().Truncate(time.Second)
	_, err = st.Transition(ctx, "r1", records.Update{To: status.Cropped, Attempt: 1, PaidUsage: 1,
		Checkpoint: &status.Checkpoint{ResultURL: "http://x/r.png", ExpiresAt: exp, Width: 800, Height: 600, APIRequestID: "api1"}})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "r1", records.Update{To: status.Retrying, Attempt: 1, ErrorCode: "storage_upload", ErrorMessage: "s3 down"})
	require.NoError(t, err)

	got, err := st.Get(ctx, "r1")
	require.NoError(t, err)
	assert.Equal(t, status.Retrying, got.State)
	assert.Equal(t, "storage_upload", got.ErrorCode)
	require.NotNil(t, got.Checkpoint, "a failed copy keeps the checkpoint")
	assert.True(t, got.Checkpoint.Usable())
	assert.Equal(t, 800, got.TargetWidth, "the first Create's parameters stay")

	_, err = st.Transition(ctx, "r1", records.Update{To: status.Running, Attempt: 2})
	require.NoError(t, err)
	got, err = st.Transition(ctx, "r1", records.Update{To: status.Succeeded, Attempt: 2,
		Stored: &status.Stored{Bucket: "b", Key: "k", Size: 10, ETag: "e"}})
	require.NoError(t, err)
	assert.Equal(t, status.Succeeded, got.State)
	assert.Empty(t, got.ErrorCode)
	assert.Nil(t, got.Checkpoint)
	assert.Equal(t, 1, got.PaidCalls)
	assert.Equal(t, 1, got.Usage)
	assert.Equal(t, []status.State{status.Queued, status.Running, status.Cropped, status.Retrying, status.Running, status.Succeeded}, states(got.History))

	ttl, err := rdb.TTL(ctx, st.Key("r1")).Result()
	require.NoError(t, err)
	assert.InDelta(t, time.Hour.Seconds(), ttl.Seconds(), 5)
}

func states(h []status.Transition) []status.State {
	var out []status.State
	for _, t := range h {
		out = append(out, t.State)
	}
	return out
}

func TestTransitionRules(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, status.Config{})

	// A stale attempt cannot move a record backwards.
	_, err := st.Transition(ctx, "s", records.Update{To: status.Running, Attempt: 3})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "s", records.Update{To: status.Failed, Attempt: 2, ErrorCode: "500"})
	require.ErrorIs(t, err, records.ErrStaleAttempt)

	// Terminal states do not move.
	_, err = st.Transition(ctx, "s", records.Update{To: status.Succeeded, Attempt: 3, Stored: &status.Stored{Key: "k"}})
	require.NoError(t, err)
	cur, err := st.Transition(ctx, "s", records.Update{To: status.Running, Attempt: 4})
	var te *status.TransitionError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, status.Succeeded, te.From)
	assert.Equal(t, status.Succeeded, cur.State, "the refusal comes with the record as it stands")
	assert.Equal(t, "k", cur.Stored.Key)

	// Only a start creates a missing record.
	_, err = st.Transition(ctx, "missing", records.Update{To: status.Failed, Attempt: 1})
	require.ErrorIs(t, err, status.ErrNotFound)
	_, err = st.Get(ctx, "missing")
	require.ErrorIs(t, err, status.ErrNotFound)

	// Canceled only from queued.
	_, _, err = st.Create(ctx, status.Record{RequestID: "c"})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "c", records.Update{To: status.Canceled})
	require.NoError(t, err)
	_, _, err = st.Create(ctx, status.Record{RequestID: "c2"})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "c2", records.Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "c2", records.Update{To: status.Canceled, Attempt: 1})
	require.ErrorAs(t, err, &te)
}

func TestHistoryIsBounded(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, status.Config{HistoryLimit: 4})
	for i := 1; i <= 10; i++ {
		_, err := st.Transition(ctx, "h", records.Update{To: status.Running, Attempt: i})
		require.NoError(t, err)
	}
	got, err := st.Get(ctx, "h")
	require.NoError(t, err)
	require.Len(t, got.History, 4)
	assert.Equal(t, 10, got.History[3].Attempt)
}

// Concurrent attempts race on one record: every update is applied exactly
// once or refused, never lost.
func TestConcurrentTransitionsAreAtomic(t *testing.T) {
	st, _ := newStore(t, status.Config{HistoryLimit: 1000})
	concurrentTransitions(t, st)
}

func concurrentTransitions(t *testing.T, st *records.Store) {
	ctx := context.Background()
	const n = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.Transition(ctx, "race", records.Update{To: status.Running, Attempt: 1})
			if err == nil {
				mu.Lock()
				applied++
				mu.Unlock()
				return
			}
			assert.True(t, errors.Is(err, status.ErrConflict), "unexpected error: %v", err)
		}()
	}
	wg.Wait()
	got, err := st.Get(ctx, "race")
	require.NoError(t, err)
	assert.Len(t, got.History, applied, "every applied update is in the history, none lost")
	assert.Greater(t, applied, 0)
}

func TestCreateManyBatchCountsAndEvents(t *testing.T) {
	st, rdb := newStore(t, status.Config{})
	checkBatchesAndEvents(t, st, rdb)
}

// On a Redis Cluster the records, batch counts and stream live in different
// slots; the store must still keep them all.
func TestOnRedisCluster(t *testing.T) {
	c := testenv.RedisCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	st := records.NewStore(rdb, status.Config{})
	checkBatchesAndEvents(t, st, rdb)
	concurrentTransitions(t, records.NewStore(rdb, status.Config{HistoryLimit: 1000}))
}

func checkBatchesAndEvents(t *testing.T, st *records.Store, rdb redis.UniversalClient) {
	ctx := context.Background()
	_, _, err := st.Create(ctx, status.Record{RequestID: "old", Params: tasks.Params{BatchID: "b1", TargetWidth: 1}})
	require.NoError(t, err)

	res, err := st.CreateMany(ctx, []status.Record{
		{RequestID: "old", Params: tasks.Params{BatchID: "b1", TargetWidth: 2}},
		{RequestID: "n1", Params: tasks.Params{BatchID: "b1"}},
		{RequestID: "n2", Params: tasks.Params{BatchID: "b1"}},
		{RequestID: "solo"},
	})
	require.NoError(t, err)
	require.Len(t, res, 4)
	assert.False(t, res[0].Created)
	assert.Equal(t, 1, res[0].Record.TargetWidth, "the existing record is returned, not the new one")
	for _, r := range res[1:] {
		assert.True(t, r.Created)
		assert.NoError(t, r.Err)
	}
	counts, err := st.BatchCounts(ctx, "", "b1")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Queued: 3}, counts)

	_, err = st.Transition(ctx, "n1", records.Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "n1", records.Update{To: status.Succeeded, Attempt: 1, Stored: &status.Stored{Bucket: "bk", Key: "k/1.png"}})
	require.NoError(t, err)
	_, err = st.Cancel(ctx, "n2")
	require.NoError(t, err)
	counts, err = st.BatchCounts(ctx, "", "b1")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Queued: 1, status.Succeeded: 1, status.Canceled: 1}, counts)

	// Terminal transitions, and only those, are in the stream.
	msgs, err := rdb.XRange(ctx, st.EventsKey(), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	assert.Equal(t, "n1", msgs[0].Values["requestId"])
	assert.Equal(t, "succeeded", msgs[0].Values["state"])
	assert.Equal(t, "b1", msgs[0].Values["batchId"])
	assert.Equal(t, "k/1.png", msgs[0].Values["key"])
	assert.Equal(t, "canceled", msgs[1].Values["state"])

	// Only a request that has not started can be canceled.
	_, err = st.Transition(ctx, "old", records.Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	_, err = st.Cancel(ctx, "old")
	var te *status.TransitionError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, status.Running, te.From)

	empty, err := st.BatchCounts(ctx, "", "nope")
	require.NoError(t, err)
	assert.Empty(t, empty)
}

// A rescue (package lease) hands a request to a task of its own: from then
// on only that task writes, and it takes over only if nobody moved on past
// the attempt it rescued.
func TestRescueOwnership(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, status.Config{Prefix: "t:", TTL: time.Hour})
	rescue := &records.Takeover{From: "r1", Attempt: 2}
	steps := []struct {
		name string
		u    records.Update
		want error // nil, records.ErrStaleAttempt, or a *TransitionError (any)
	}{
		{"the request's own task runs", records.Update{To: status.Running, Attempt: 1, Task: "r1"}, nil},
		{"its next attempt", records.Update{To: status.Running, Attempt: 2, Task: "r1"}, nil},
		{"a rescue of an older attempt is stale", records.Update{To: status.Running, Attempt: 2, Task: "r1~rescue-1",
			Takeover: &records.Takeover{From: "r1", Attempt: 1}}, records.ErrStaleAttempt},
		{"the rescue of attempt 2 takes over", records.Update{To: status.Running, Attempt: 3, Task: "r1~rescue-2", Takeover: rescue}, nil},
		{"the frozen attempt 2 wakes up: stale", records.Update{To: status.Cropped, Attempt: 2, Task: "r1",
			Checkpoint: &status.Checkpoint{ResultURL: "http://x/r.png"}}, records.ErrStaleAttempt},
		{"asynq's late retry of the old task: stale", records.Update{To: status.Running, Attempt: 3, Task: "r1"}, records.ErrStaleAttempt},
		{"the old task with a higher attempt: still stale", records.Update{To: status.Running, Attempt: 9, Task: "r1"}, records.ErrStaleAttempt},
		{"the same rescue twice: the rescue task owns it already", records.Update{To: status.Running, Attempt: 3, Task: "r1~rescue-2", Takeover: rescue}, nil},
		{"the owner moves on", records.Update{To: status.Cropped, Attempt: 3, Task: "r1~rescue-2",
			Checkpoint: &status.Checkpoint{ResultURL: "http://x/r.png"}, PaidUsage: 1}, nil},
		{"a second rescue, of the rescue task", records.Update{To: status.Running, Attempt: 4, Task: "r1~rescue-3",
			Takeover: &records.Takeover{From: "r1~rescue-2", Attempt: 3}}, nil},
		{"the first rescue task is stale now", records.Update{To: status.Running, Attempt: 4, Task: "r1~rescue-2"}, records.ErrStaleAttempt},
		{"an update naming no task (a kept answer, a cancel) is not fenced by task", records.Update{To: status.Running, Attempt: 4}, nil},
		{"the owner finishes", records.Update{To: status.Succeeded, Attempt: 4, Task: "r1~rescue-3", Stored: &status.Stored{Bucket: "b", Key: "k"}}, nil},
		{"a rescue of a finished request is refused as a move", records.Update{To: status.Running, Attempt: 5, Task: "r1~rescue-4",
			Takeover: &records.Takeover{From: "r1~rescue-3", Attempt: 4}}, &status.TransitionError{}},
	}
	_, _, err := st.Create(ctx, status.Record{RequestID: "r1", Source: "url"})
	require.NoError(t, err)
	for _, s := range steps {
		_, err := st.Transition(ctx, "r1", s.u)
		switch want := s.want; {
		case want == nil:
			require.NoError(t, err, s.name)
		case errors.As(want, new(*status.TransitionError)):
			require.ErrorAs(t, err, new(*status.TransitionError), s.name)
		default:
			require.ErrorIs(t, err, want, s.name)
		}
	}
	rec, err := st.Get(ctx, "r1")
	require.NoError(t, err)
	assert.Equal(t, status.Succeeded, rec.State)
	assert.Equal(t, "r1~rescue-3", rec.Task)
	assert.Equal(t, 1, rec.PaidCalls, "the frozen attempt's checkpoint was refused")
}

// A rescue that comes after the old task already started its next attempt
// (asynq put it back first) does not take the request from it.
func TestRescueAfterTheOldTaskMovedOnIsStale(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, status.Config{Prefix: "t:", TTL: time.Hour})
	_, err := st.Transition(ctx, "r2", records.Update{To: status.Running, Attempt: 1, Task: "r2"})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "r2", records.Update{To: status.Running, Attempt: 2, Task: "r2"})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "r2", records.Update{To: status.Running, Attempt: 2, Task: "r2~rescue-1",
		Takeover: &records.Takeover{From: "r2", Attempt: 1}})
	require.ErrorIs(t, err, records.ErrStaleAttempt)
	rec, err := st.Get(ctx, "r2")
	require.NoError(t, err)
	assert.Empty(t, rec.Task)
}

// A queued record is marked with the lane it is served in; the mark stays
// through the worker's transitions and is never written on a record that
// has moved on.
func TestServedAs(t *testing.T) {
	ctx := context.Background()
	st, rdb := newStore(t, status.Config{Prefix: "t:", TTL: time.Hour})
	_, _, err := st.Create(ctx, status.Record{RequestID: "r1", Params: tasks.Params{TargetWidth: 800, TargetHeight: 600, Tenant: "acme",
		Priority: "urgent", Metadata: map[string]string{"sku": "12345678901234567890"}}, Source: "url", BatchSeq: 9007199254740993})
	require.NoError(t, err)
	before, err := rdb.Get(ctx, st.Key("r1")).Result()
	require.NoError(t, err)
	ttlBefore, err := rdb.TTL(ctx, st.Key("r1")).Result()
	require.NoError(t, err)

	ok, err := st.ServedAs(ctx, "r1", "normal")
	require.NoError(t, err)
	assert.True(t, ok)
	after, err := rdb.Get(ctx, st.Key("r1")).Result()
	require.NoError(t, err)
	assert.Equal(t, before[:len(before)-1]+`,"servedAs":"normal"}`, after, "the rest of the record is untouched (numbers too)")
	ttl, err := rdb.TTL(ctx, st.Key("r1")).Result()
	require.NoError(t, err)
	assert.Equal(t, ttlBefore, ttl, "the expiry stays as it was (none: a waiting record does not expire)")
	rec, err := st.Get(ctx, "r1")
	require.NoError(t, err)
	assert.Equal(t, "normal", rec.ServedAs)
	assert.Equal(t, int64(9007199254740993), rec.BatchSeq)

	ok, err = st.ServedAs(ctx, "r1", "backfill")
	require.NoError(t, err)
	assert.False(t, ok, "marked once")

	rec, err = st.Transition(ctx, "r1", records.Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	assert.Equal(t, "normal", rec.ServedAs, "kept through transitions")

	_, _, err = st.Create(ctx, status.Record{RequestID: "r2", Params: tasks.Params{TargetWidth: 1, TargetHeight: 1}})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "r2", records.Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	_, _, err = st.Create(ctx, status.Record{RequestID: "r3", Params: tasks.Params{TargetWidth: 1, TargetHeight: 1}})
	require.NoError(t, err)
	_, err = st.Cancel(ctx, "r3")
	require.NoError(t, err)
	for _, id := range []string{"r2", "r3", "missing"} {
		ok, err := st.ServedAs(ctx, id, "normal")
		require.NoError(t, err)
		assert.False(t, ok, id)
	}
	rec, err = st.Get(ctx, "r2")
	require.NoError(t, err)
	assert.Empty(t, rec.ServedAs, "a running record is not marked")
}
