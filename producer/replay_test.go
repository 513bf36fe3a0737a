package producer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// A replay sends failed requests again: back to queued with a new attempt
// series, their history kept, their batch's counts moved back, an entry
// each in their own lane and tenant; a second replay finds nothing to do.
func TestReplaySendsFailedRequestsAgain(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProducer(t, producer.Config{Backlog: true})
	st := records.NewStore(rdb, status.Config{})
	var reqs []tasks.Request
	for i := range 6 {
		r := req(fmt.Sprintf("rp-%d", i))
		r.BatchID, r.Tenant, r.Priority = "cat", "acme", "backfill"
		if i == 5 {
			r.Tenant = "globex"
		}
		reqs = append(reqs, r)
	}
	for _, r := range p.EnqueueBatch(ctx, reqs) {
		require.Equal(t, producer.Enqueued, r.Outcome, "%v", r.Err)
	}
	// The feeder's part, by hand: the entries leave the backlog.
	b := backlog.New(rdb, backlog.Config{})
	require.NoError(t, rdb.Del(ctx, b.ListKey("backfill", "acme"), b.ListKey("backfill", "globex")).Err())
	for i, r := range reqs {
		_, err := st.Transition(ctx, r.RequestID, records.Update{To: status.Running, Attempt: 1})
		require.NoError(t, err)
		code := "900"
		if i%2 == 1 {
			code = "http_404"
		}
		if i == 4 {
			_, err = st.Transition(ctx, r.RequestID, records.Update{To: status.Succeeded, Attempt: 1, Stored: &status.Stored{Bucket: "b", Key: "k"}})
		} else {
			_, err = st.Transition(ctx, r.RequestID, records.Update{To: status.Failed, Attempt: 1, ErrorCode: code, ErrorMessage: "the CDN said " + code})
		}
		require.NoError(t, err)
	}

	dry, err := p.Replay(ctx, producer.ReplayFilter{Tenant: "acme", BatchID: "cat"}, true, "test")
	require.NoError(t, err)
	assert.Equal(t, producer.ReplayResult{Matched: 4}, dry, "rp-0..3 failed; rp-4 succeeded; rp-5 is globex's")
	only404, err := p.Replay(ctx, producer.ReplayFilter{Tenant: "acme", Code: "http_404"}, true, "test")
	require.NoError(t, err)
	assert.Equal(t, 2, only404.Matched)
	none, err := p.Replay(ctx, producer.ReplayFilter{Since: time.Now().Add(time.Hour)}, true, "test")
	require.NoError(t, err)
	assert.Zero(t, none.Matched)

	res, err := p.Replay(ctx, producer.ReplayFilter{Tenant: "acme", BatchID: "cat"}, false, "operator")
	require.NoError(t, err)
	assert.Equal(t, producer.ReplayResult{Matched: 4, Replayed: 4}, res)
	counts, err := st.BatchCounts(ctx, "acme", "cat")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Queued: 4, status.Succeeded: 1}, counts)
	n, err := rdb.LLen(ctx, b.ListKey("backfill", "acme")).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(4), n, "each back in its own lane and tenant")
	rec, err := st.Get(ctx, "rp-1")
	require.NoError(t, err)
	assert.Equal(t, status.Queued, rec.State)
	assert.Zero(t, rec.Attempt, "a new attempt series")
	assert.Equal(t, 1, rec.Replays)
	assert.Empty(t, rec.ErrorCode)
	require.GreaterOrEqual(t, len(rec.History), 4)
	assert.Equal(t, status.Failed, rec.History[len(rec.History)-2].State, "the old series is kept")
	assert.Equal(t, 1, rec.History[len(rec.History)-1].Replay)
	ttl, err := rdb.PTTL(ctx, st.Key("rp-1")).Result()
	require.NoError(t, err)
	assert.Less(t, ttl, time.Duration(0), "waiting again: no TTL")

	report, err := rdb.LRange(ctx, st.ReportKey("acme", "cat"), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, report, 1, "the replayed failures left the report: one line per request")
	assert.Contains(t, report[0], `"requestId":"rp-4"`)

	again, err := p.Replay(ctx, producer.ReplayFilter{Tenant: "acme", BatchID: "cat"}, false, "operator")
	require.NoError(t, err)
	assert.Zero(t, again.Matched, "replayed requests leave the failures index: queued once")
	n, err = rdb.LLen(ctx, b.ListKey("backfill", "acme")).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(4), n)

	audits, err := p.Replays(ctx, 10)
	require.NoError(t, err)
	require.Len(t, audits, 5)
	assert.Equal(t, "operator", audits[0].By)
	assert.Equal(t, 4, audits[1].Replayed)
	assert.False(t, audits[1].DryRun)
	assert.True(t, audits[2].DryRun)
}
