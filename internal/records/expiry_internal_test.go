package records

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

const testTTL = time.Hour

func expiryStores(t *testing.T) map[string]func(t *testing.T) (*Store, redis.UniversalClient) {
	return map[string]func(t *testing.T) (*Store, redis.UniversalClient){
		"single": func(t *testing.T) (*Store, redis.UniversalClient) {
			rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t).Addr()})
			t.Cleanup(func() { _ = rdb.Close() })
			return NewStore(rdb, status.Config{Prefix: "t:", TTL: testTTL}), rdb
		},
		"cluster": func(t *testing.T) (*Store, redis.UniversalClient) {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t).Addrs()})
			t.Cleanup(func() { _ = rdb.Close() })
			return NewStore(rdb, status.Config{Prefix: "t:", TTL: testTTL}), rdb
		},
	}
}

// ttl is the TTL of key: -1 without one, -2 when the key does not exist.
func ttl(t *testing.T, rdb redis.UniversalClient, key string) time.Duration {
	t.Helper()
	d, err := rdb.PTTL(context.Background(), key).Result()
	require.NoError(t, err)
	return d // go-redis hands Redis's -1 and -2 back as they are
}

// assertBatchTTL checks every key of the batch that exists: none has a TTL
// while waiting, each has about testTTL otherwise.
func assertBatchTTL(t *testing.T, st *Store, rdb redis.UniversalClient, tenant, batch string, waiting bool, msg string) {
	t.Helper()
	seen := 0
	for _, k := range st.batchKeys(tenant, batch) {
		d := ttl(t, rdb, k)
		if d == -2 {
			continue
		}
		seen++
		if waiting {
			assert.Equal(t, time.Duration(-1), d, "%s: %s has a TTL", msg, k)
		} else {
			assert.InDelta(t, testTTL.Seconds(), d.Seconds(), 5, "%s: %s", msg, k)
		}
	}
	assert.GreaterOrEqual(t, seen, 3, "%s: the counts, ids and at least one bitmap exist", msg)
}

// A waiting record (queued, running, retrying, cropped) has no TTL; a
// terminal one has the configured TTL. A batch's keys have none while any
// of its requests waits, and get the TTL when the last one finishes; a
// batch that gets new requests loses it again.
func TestNothingExpiresWhileItWaits(t *testing.T) {
	for name, open := range expiryStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st, rdb := open(t)
			_, err := st.CreateMany(ctx, []status.Record{
				{RequestID: "w1", Params: tasks.Params{BatchID: "cat", Tenant: "acme"}},
				{RequestID: "w2", Params: tasks.Params{BatchID: "cat", Tenant: "acme"}},
				{RequestID: "w3", Params: tasks.Params{BatchID: "cat", Tenant: "acme"}},
				{RequestID: "solo"},
			})
			require.NoError(t, err)
			for _, id := range []string{"w1", "w2", "w3", "solo"} {
				assert.Equal(t, time.Duration(-1), ttl(t, rdb, st.Key(id)), "queued %s", id)
			}
			assertBatchTTL(t, st, rdb, "acme", "cat", true, "all queued")

			steps := []struct {
				id string
				u  Update
			}{
				{"w1", Update{To: status.Running, Attempt: 1}},
				{"w1", Update{To: status.Cropped, Attempt: 1, Checkpoint: &status.Checkpoint{ResultURL: "http://x/r.png"}, PaidUsage: 1}},
				{"w1", Update{To: status.Retrying, Attempt: 1, ErrorCode: "storage_upload"}},
				{"w1", Update{To: status.Running, Attempt: 2}},
				{"w2", Update{To: status.Running, Attempt: 1}},
			}
			for _, s := range steps {
				_, err := st.Transition(ctx, s.id, s.u)
				require.NoError(t, err)
				assert.Equal(t, time.Duration(-1), ttl(t, rdb, st.Key(s.id)), "%s %s", s.id, s.u.To)
				assertBatchTTL(t, st, rdb, "acme", "cat", true, string(s.id)+" "+string(s.u.To))
			}

			finish := []struct {
				id string
				u  Update
			}{
				{"w1", Update{To: status.Succeeded, Attempt: 2, Stored: &status.Stored{Bucket: "b", Key: "k"}}},
				{"w2", Update{To: status.Failed, Attempt: 1, ErrorCode: "700"}},
				{"w3", Update{To: status.Canceled}},
			}
			for i, s := range finish {
				_, err := st.Transition(ctx, s.id, s.u)
				require.NoError(t, err)
				assert.InDelta(t, testTTL.Seconds(), ttl(t, rdb, st.Key(s.id)).Seconds(), 5, "%s %s", s.id, s.u.To)
				assertBatchTTL(t, st, rdb, "acme", "cat", i < len(finish)-1, "after "+s.id+" "+string(s.u.To))
			}
			counts, err := st.BatchCounts(ctx, "acme", "cat")
			require.NoError(t, err)
			assert.Equal(t, map[status.State]int64{status.Succeeded: 1, status.Failed: 1, status.Canceled: 1}, counts)
			paid, err := st.BatchPaidCalls(ctx, "acme", "cat")
			require.NoError(t, err)
			assert.Equal(t, int64(1), paid)
			assert.Equal(t, time.Duration(-1), ttl(t, rdb, st.Key("solo")), "a request without a batch waits as long")

			// The batch takes a new request: it waits again, untimed.
			_, created, err := st.Create(ctx, status.Record{RequestID: "w4", Params: tasks.Params{BatchID: "cat", Tenant: "acme"}})
			require.NoError(t, err)
			require.True(t, created)
			assertBatchTTL(t, st, rdb, "acme", "cat", true, "a new request")
			// Undone (its enqueue failed): the batch is done again.
			require.NoError(t, st.Undo(ctx, status.Record{RequestID: "w4", Params: tasks.Params{BatchID: "cat", Tenant: "acme"}}))
			assertBatchTTL(t, st, rdb, "acme", "cat", false, "undone")
		})
	}
}

// Records and batches an earlier version wrote with a TTL from their
// creation lose it when a transition touches them while they wait.
func TestAWaitingRecordWrittenWithATTLLosesItWhenTouched(t *testing.T) {
	ctx := context.Background()
	st, rdb := expiryStores(t)["single"](t)
	_, err := st.CreateMany(ctx, []status.Record{{RequestID: "old1", Params: tasks.Params{BatchID: "legacy"}}, {RequestID: "old2", Params: tasks.Params{BatchID: "legacy"}}})
	require.NoError(t, err)
	// As the previous version left them: every key with the TTL.
	for _, k := range append([]string{st.Key("old1"), st.Key("old2")}, st.batchKeys("", "legacy")...) {
		require.NoError(t, rdb.PExpire(ctx, k, 10*time.Minute).Err())
	}
	_, err = st.Transition(ctx, "old1", Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl(t, rdb, st.Key("old1")), "touched: no TTL while it runs")
	assertBatchTTL(t, st, rdb, "", "legacy", true, "the batch touched")
	assert.Greater(t, ttl(t, rdb, st.Key("old2")), time.Duration(0), "untouched: keeps the old TTL until a transition")
}

// A record Redis lost is written again, from what its task or entry
// carries, by a move to running or failed: counted in its batch at the
// place the index kept (or appended when the index was lost too).
func TestALostRecordIsWrittenAgainAndCounted(t *testing.T) {
	for name, open := range expiryStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st, rdb := open(t)
			accepted := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
			_, err := st.CreateMany(ctx, []status.Record{
				{RequestID: "l1", Params: tasks.Params{BatchID: "cat", Tenant: "acme", TargetWidth: 800}, SourceURL: "https://cdn/x.jpg"},
				{RequestID: "l2", Params: tasks.Params{BatchID: "cat", Tenant: "acme"}},
			})
			require.NoError(t, err)
			require.NoError(t, rdb.Del(ctx, st.Key("l1")).Err())

			_, err = st.Transition(ctx, "l1", Update{To: status.Cropped, Attempt: 1})
			require.ErrorIs(t, err, status.ErrNotFound, "only a start or a failure writes a record again")
			_, err = st.Transition(ctx, "l1", Update{To: status.Failed, ErrorCode: "x"})
			require.ErrorIs(t, err, status.ErrNotFound, "a failure needs a seed")

			seed := &status.Record{RequestID: "l1", Params: tasks.Params{BatchID: "cat", Tenant: "acme", TargetWidth: 800}, SourceURL: "https://cdn/x.jpg", CreatedAt: accepted}
			rec, err := st.Transition(ctx, "l1", Update{To: status.Failed, ErrorCode: "record_lost", ErrorMessage: "gone", Seed: seed})
			require.NoError(t, err)
			assert.Equal(t, status.Failed, rec.State)
			assert.Equal(t, int64(1), rec.BatchSeq, "its place in the index")
			got, err := st.Get(ctx, "l1")
			require.NoError(t, err)
			assert.Equal(t, status.Failed, got.State)
			assert.Equal(t, "record_lost", got.ErrorCode)
			assert.Equal(t, "https://cdn/x.jpg", got.SourceURL)
			assert.Equal(t, accepted, got.CreatedAt)
			assert.Equal(t, int64(1), got.BatchSeq)
			assert.InDelta(t, testTTL.Seconds(), ttl(t, rdb, st.Key("l1")).Seconds(), 5)
			counts, err := st.BatchCounts(ctx, "acme", "cat")
			require.NoError(t, err)
			assert.Equal(t, map[status.State]int64{status.Queued: 1, status.Failed: 1}, counts, "moved from queued, not counted twice")
			page, err := st.BatchPage(ctx, "acme", "cat", status.Failed, 0, 10)
			require.NoError(t, err)
			assert.Equal(t, int64(1), page.Total)
			page, err = st.BatchPage(ctx, "acme", "cat", status.Queued, 0, 10)
			require.NoError(t, err)
			assert.Equal(t, int64(1), page.Total, "its queued bit is cleared")

			// The batch lost with it: its counts start again from what is written again.
			require.NoError(t, rdb.Del(ctx, st.Key("l2")).Err())
			for _, k := range st.batchKeys("acme", "cat") {
				require.NoError(t, rdb.Del(ctx, k).Err())
			}
			require.NoError(t, rdb.ZRem(ctx, st.BatchesKey(), "acme/cat").Err())
			rec, err = st.Transition(ctx, "l2", Update{To: status.Running, Attempt: 1, Seed: &status.Record{RequestID: "l2", Params: tasks.Params{BatchID: "cat", Tenant: "acme"}}})
			require.NoError(t, err)
			assert.Equal(t, int64(1), rec.BatchSeq, "appended to an index that starts again")
			counts, err = st.BatchCounts(ctx, "acme", "cat")
			require.NoError(t, err)
			assert.Equal(t, map[status.State]int64{status.Running: 1}, counts)
			assertBatchTTL(t, st, rdb, "acme", "cat", true, "running again")
			refs, err := st.Batches(ctx, "acme", 10)
			require.NoError(t, err)
			require.Len(t, refs, 1, "listed again")
			_, err = st.Transition(ctx, "l2", Update{To: status.Succeeded, Attempt: 1, Stored: &status.Stored{Bucket: "b", Key: "k"}})
			require.NoError(t, err)
			assertBatchTTL(t, st, rdb, "acme", "cat", false, "done")

			raw, err := rdb.Get(ctx, st.Key("l2")).Bytes()
			require.NoError(t, err)
			var stored map[string]any
			require.NoError(t, json.Unmarshal(raw, &stored))
			assert.EqualValues(t, 1, stored["batchSeq"], "its place is stored")
		})
	}
}

// FailWaiting fails a queued request, writes a lost one again failed, and
// leaves one that moved on (its task runs, or it finished) as it is.
func TestFailWaiting(t *testing.T) {
	ctx := context.Background()
	st, _ := expiryStores(t)["single"](t)
	_, err := st.CreateMany(ctx, []status.Record{{RequestID: "q", Params: tasks.Params{BatchID: "b"}}, {RequestID: "r",
		Params: tasks.Params{BatchID: "b"}}, {RequestID: "c", Params: tasks.Params{BatchID: "b"}}})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "r", Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	_, err = st.Cancel(ctx, "c")
	require.NoError(t, err)
	for _, c := range []struct {
		id   string
		want status.State
		code string
	}{
		{"q", status.Failed, "bad_entry"},
		{"r", status.Running, ""},
		{"c", status.Canceled, ""},
		{"gone", status.Failed, "bad_entry"},
	} {
		rec, err := st.FailWaiting(ctx, status.Record{RequestID: c.id, Params: tasks.Params{BatchID: "b"}}, "bad_entry", "unreadable")
		require.NoError(t, err, c.id)
		assert.Equal(t, c.want, rec.State, c.id)
		assert.Equal(t, c.code, rec.ErrorCode, c.id)
	}
	counts, err := st.BatchCounts(ctx, "", "b")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Failed: 2, status.Running: 1, status.Canceled: 1}, counts)
}
