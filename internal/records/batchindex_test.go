package records_test

import (
	"context"
	"fmt"
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

func pageIDs(p records.Page) []string {
	var ids []string
	for _, r := range p.Records {
		ids = append(ids, r.RequestID)
	}
	return ids
}

// The index follows every record of a batch through its states, pages by
// state and across states, keeps tenants apart, lists batches, and
// forgets an undone record: on one Redis (in the create script and the
// transition's transaction) and on a Redis Cluster (after them).
func TestBatchIndex(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		st, _ := newStore(t, status.Config{Prefix: "t:", TTL: time.Hour})
		testBatchIndex(t, st)
	})
	t.Run("cluster", func(t *testing.T) {
		c := testenv.RedisCluster(t)
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
		t.Cleanup(func() { _ = rdb.Close() })
		testBatchIndex(t, records.NewStore(rdb, status.Config{Prefix: "t:", TTL: time.Hour}))
	})
}

func testBatchIndex(t *testing.T, st *records.Store) {
	ctx := context.Background()

	var recs []status.Record
	for i := range 10 {
		recs = append(recs, status.Record{RequestID: fmt.Sprintf("b-%02d", i), Params: tasks.Params{BatchID: "feed", Tenant: "acme"}})
	}
	recs = append(recs, status.Record{RequestID: "other-1", Params: tasks.Params{BatchID: "feed"}}, status.Record{RequestID: "lone"})
	_, err := st.CreateMany(ctx, recs)
	require.NoError(t, err)

	// b-00..b-02 succeed, b-03 fails, b-04 runs; the rest wait.
	for i := range 5 {
		id := fmt.Sprintf("b-%02d", i)
		_, err := st.Transition(ctx, id, records.Update{To: status.Running, Attempt: 1})
		require.NoError(t, err)
		switch {
		case i < 3:
			_, err = st.Transition(ctx, id, records.Update{To: status.Cropped, Attempt: 1, Checkpoint: &status.Checkpoint{ResultURL: "http://x"}})
			require.NoError(t, err)
			_, err = st.Transition(ctx, id, records.Update{To: status.Succeeded, Attempt: 1, Stored: &status.Stored{Bucket: "b", Key: id}})
		case i == 3:
			_, err = st.Transition(ctx, id, records.Update{To: status.Failed, Attempt: 1, ErrorCode: "700", ErrorMessage: "too small"})
		}
		require.NoError(t, err)
	}

	page, err := st.BatchPage(ctx, "acme", "feed", status.Failed, 0, 50)
	require.NoError(t, err)
	assert.Equal(t, int64(1), page.Total)
	assert.Equal(t, []string{"b-03"}, pageIDs(page))
	assert.Equal(t, "700", page.Records[0].ErrorCode)

	page, err = st.BatchPage(ctx, "acme", "feed", status.Queued, 2, 2)
	require.NoError(t, err)
	assert.Equal(t, int64(5), page.Total)
	assert.Equal(t, []string{"b-07", "b-08"}, pageIDs(page), "oldest first, then by id")

	// Every state, in GridOrder, paged across the sets' boundaries.
	var all []string
	for off := int64(0); ; off += 3 {
		page, err = st.BatchPage(ctx, "acme", "feed", "", off, 3)
		require.NoError(t, err)
		assert.Equal(t, int64(10), page.Total)
		if len(page.Records) == 0 {
			break
		}
		all = append(all, pageIDs(page)...)
	}
	assert.Equal(t, []string{"b-03", "b-00", "b-01", "b-02", "b-04", "b-05", "b-06", "b-07", "b-08", "b-09"}, all)

	// The default tenant's batch of the same name is another batch.
	page, err = st.BatchPage(ctx, "", "feed", "", 0, 50)
	require.NoError(t, err)
	assert.Equal(t, []string{"other-1"}, pageIDs(page))

	_, err = st.BatchPage(ctx, "acme", "feed", "bogus", 0, 50)
	require.Error(t, err)

	paid, err := st.BatchPaidCalls(ctx, "acme", "feed")
	require.NoError(t, err)
	assert.Equal(t, int64(3), paid)

	refs, err := st.Batches(ctx, "", 10)
	require.NoError(t, err)
	require.Len(t, refs, 2)
	refs, err = st.Batches(ctx, "acme", 10)
	require.NoError(t, err)
	require.Len(t, refs, 1)
	assert.Equal(t, records.BatchRef{Tenant: "acme", BatchID: "feed", CreatedAt: refs[0].CreatedAt}, refs[0])

	fails, err := st.FailuresSince(ctx, time.Now().Add(-time.Hour))
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"700": 1}, fails)

	// An undone record leaves the index with its count.
	require.NoError(t, st.Undo(ctx, status.Record{RequestID: "b-09", Params: tasks.Params{BatchID: "feed", Tenant: "acme"}}))
	page, err = st.BatchPage(ctx, "acme", "feed", status.Queued, 0, 50)
	require.NoError(t, err)
	assert.Equal(t, []string{"b-05", "b-06", "b-07", "b-08"}, pageIDs(page))
	counts, err := st.BatchCounts(ctx, "acme", "feed")
	require.NoError(t, err)
	assert.Equal(t, int64(4), counts[status.Queued])
}
