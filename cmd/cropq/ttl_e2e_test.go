package main

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
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

// A backlog that outlives CROPQ_STATUS_TTL (3 s here, 16 s of calls at
// 2/s) loses nothing: every accepted request ends succeeded, or failed
// with a code, and its batch is found and complete. Two requests are
// damaged before the worker starts: one's backlog entry is made
// unreadable (it fails, bad_entry, counted in the batch), and the record
// of another is deleted, as a Redis that lost data would (its task writes
// it again from its payload, and it succeeds).
func TestABacklogOutlivesTheStatusTTL(t *testing.T) {
	const ttl = 3 * time.Second
	s := newStack(t, stackOptions{})
	s.env = append(s.env, "CROPQ_STATUS_TTL="+ttl.String(), "CROPQ_QUOTA_RATE=2", "CROPQ_QUOTA_BURST=1", "CROPQ_FEED_LEAD=1s")
	ctx := context.Background()
	st := records.NewStore(s.rdb, status.Config{})

	path, ids := s.bulkFile(t, "slow", 30, "")
	out, err := s.cropq("enqueue", "--file", path, "--batch", "slow", "--no-progress")
	require.NoError(t, err, out)
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "images", "mug-square.png"))
	require.NoError(t, err)
	prod := producer.New(s.rdb, producer.Config{Backlog: true, Task: tasks.Options{Limits: localLimits}})
	t.Cleanup(func() { _ = prod.Close() })
	res := prod.Enqueue(ctx, tasks.Request{RequestID: "slow-b64", ImageBase64: base64.StdEncoding.EncodeToString(raw),
		Params: tasks.Params{TargetWidth: 300, TargetHeight: 300, BatchID: "slow"}})
	require.Equal(t, producer.Enqueued, res.Outcome, "%v", res.Err)
	ids = append(ids, "slow-b64")
	accepted := time.Now()

	for _, id := range ids {
		d, err := s.rdb.PTTL(ctx, st.Key(id)).Result()
		require.NoError(t, err)
		assert.Equal(t, time.Duration(-1), d, "a queued record has no TTL: %s", id)
	}
	// slow-007's entry (id only: a URL request) is made unreadable; the
	// record of slow-b64 (whose entry carries its payload) is lost.
	list := backlog.New(s.rdb, backlog.Config{}).ListKey("normal", "default")
	entries, err := s.rdb.LRange(ctx, list, 0, -1).Result()
	require.NoError(t, err)
	garbled := false
	for i, e := range entries {
		if head, _, _ := strings.Cut(e, "\n"); strings.HasSuffix(head, " slow-007") {
			require.NoError(t, s.rdb.LSet(ctx, list, int64(i), head+"\n"+`{"v":1,"requestId":`).Err())
			garbled = true
		}
	}
	require.True(t, garbled, "slow-007's entry is in %s", list)
	require.NoError(t, s.rdb.Del(ctx, st.Key("slow-b64")).Err())

	s.startWorker()
	// The pipeline waits on its batch as it runs.
	type result struct {
		out string
		err error
	}
	waited := make(chan result, 1)
	go func() {
		out, err := s.cropq("wait", "--batch", "slow", "--interval", "100ms", "--timeout", "120s")
		waited <- result{out, err}
	}()

	// Well past the TTL, what still waits is all there, untimed, and the
	// batch counts every request.
	require.Eventually(t, func() bool {
		c, err := st.BatchCounts(ctx, "", "slow")
		return err == nil && c[status.Succeeded] >= 12
	}, 60*time.Second, 100*time.Millisecond)
	require.Greater(t, time.Since(accepted), 2*ttl, "the backlog outlived the TTL")
	counts, err := st.BatchCounts(ctx, "", "slow")
	require.NoError(t, err)
	var total int64
	for _, n := range counts {
		total += n
	}
	assert.Equal(t, int64(len(ids)), total, "the batch counts every request: %v", counts)
	waiting := 0
	for _, id := range ids {
		rec, err := st.Get(ctx, id)
		if err != nil || rec.State.Terminal() {
			continue // a finished one may have expired, as it should
		}
		waiting++
		d, err := s.rdb.PTTL(ctx, st.Key(id)).Result()
		require.NoError(t, err)
		assert.Equal(t, time.Duration(-1), d, "%s waits (%s) without a TTL", id, rec.State)
	}
	assert.Greater(t, waiting, 5, "requests still waited")

	var r result
	select {
	case r = <-waited:
	case <-time.After(150 * time.Second):
		t.Fatal("cropq wait --batch never returned")
	}
	require.ErrorContains(t, r.err, "exit status 4", "one request failed: %s", r.out)
	assert.Contains(t, r.out, "batch slow: 31/31 done (failed 1, succeeded 30)", "the batch is found and complete")
	assert.NotContains(t, r.out, "not found")

	// Every request's end is on the events stream (its record expires TTL
	// after it): each one once, succeeded, or failed with a code.
	msgs, err := s.rdb.XRange(ctx, st.EventsKey(), "-", "+").Result()
	require.NoError(t, err)
	ends := map[string]map[string]any{}
	for _, m := range msgs {
		id, _ := m.Values["requestId"].(string)
		assert.NotContains(t, ends, id, "one end per request")
		ends[id] = m.Values
	}
	for _, id := range ids {
		ev, ok := ends[id]
		if !assert.True(t, ok, "%s ended", id) {
			continue
		}
		assert.Equal(t, "slow", ev["batchId"], id)
		if id == "slow-007" {
			assert.Equal(t, "failed", ev["state"])
			assert.Equal(t, "bad_entry", ev["errorCode"])
			continue
		}
		assert.Equal(t, "succeeded", ev["state"], id)
	}
	assert.Len(t, ends, len(ids))
	assert.Equal(t, int64(len(ids)-1), s.stats().Calls["200"], "one paid call per request that could be fed")
	assert.Greater(t, time.Since(accepted), 4*ttl)
}
