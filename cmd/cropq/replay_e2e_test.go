package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/status"
)

// Issue 24's CDN outage, end to end: 10 of a batch's 30 images are missing
// at the source (404), so 10 requests fail (the vendor's 900, not billed);
// the images come back; `cropq replay --batch B --dry-run` says 10; the
// replay stores all 30, for exactly 30 paid calls.
func TestACDNOutageIsReplayedOnceFixed(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.env = append(s.env, "CROPQ_MAX_RETRY=1")
	var outage atomic.Bool
	outage.Store(true)
	files := http.FileServer(http.Dir(filepath.Join("..", "..", "testdata", "images")))
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, _ := strconv.Atoi(r.URL.Query().Get("v")); outage.Load() && v < 10 {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(cdn.Close)

	var b strings.Builder
	var ids []string
	for i := range 30 {
		id := fmt.Sprintf("cdn-%02d", i)
		ids = append(ids, id)
		fmt.Fprintf(&b, `{"requestId":%q,"imageUrl":"%s/%s?v=%d","targetWidth":300,"targetHeight":300,"batchId":"cdn"}`+"\n", id, cdn.URL, firstImage(t), i)
	}
	file := filepath.Join(t.TempDir(), "cdn.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(b.String()), 0o644))
	_, err := s.cropq("enqueue", "--file", file)
	require.NoError(t, err)
	s.startWorker()
	s.awaitAll(t, ids, 2*time.Minute)

	st := records.NewStore(s.rdb, status.Config{})
	ctx := context.Background()
	counts, err := st.BatchCounts(ctx, "", "cdn")
	require.NoError(t, err)
	require.Equal(t, map[status.State]int64{status.Succeeded: 20, status.Failed: 10}, counts)
	for _, id := range ids[:10] {
		rec, err := st.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, "900", rec.ErrorCode, id)
	}
	failedAttempts := s.stats().Calls["900"]
	assert.GreaterOrEqual(t, failedAttempts, int64(20), "each of the 10 tried twice (CROPQ_MAX_RETRY=1)")

	outage.Store(false)
	out, err := s.cropq("replay", "--batch", "cdn", "--dry-run")
	require.NoError(t, err)
	assert.Contains(t, out, "10 failed requests match; would replay 10")
	out, err = s.cropq("replay", "--batch", "cdn")
	require.NoError(t, err)
	assert.Contains(t, out, "10 failed requests match; replayed 10 (10 sent again, 0 already replayed)")
	out, err = s.cropq("replay", "--batch", "cdn")
	require.NoError(t, err)
	assert.Contains(t, out, "0 failed requests match", "replayed requests are no longer failed")

	s.awaitAll(t, ids, 2*time.Minute)
	counts, err = st.BatchCounts(ctx, "", "cdn")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Succeeded: 30}, counts)
	paid := 0
	for _, id := range ids {
		rec, err := st.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, status.Succeeded, rec.State, id)
		paid += rec.PaidCalls
		cfg := s.object(rec.Stored.Key)
		assert.Equal(t, 300, cfg.Width, id)
	}
	rec, err := st.Get(ctx, ids[0])
	require.NoError(t, err)
	assert.Equal(t, 1, rec.Replays)
	assert.Equal(t, 1, rec.Attempt, "a new attempt series")
	assert.Equal(t, 30, paid)
	st2 := s.stats()
	assert.Equal(t, int64(30), st2.Calls["200"], "paid calls: the 30 crops; the failed attempts (900) are not billed")
	assert.Equal(t, failedAttempts, st2.Calls["900"], "no failure after the replay")
	// The batch's report: one line per request, its last end.
	reportFile := filepath.Join(t.TempDir(), "cdn-report.jsonl")
	_, err = s.cropq("wait", "--batch", "cdn", "--report", reportFile, "--no-progress")
	require.NoError(t, err)
	report, err := os.ReadFile(reportFile)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(report)), "\n")
	assert.Len(t, lines, 30)
	for _, l := range lines {
		assert.Contains(t, l, `"state":"succeeded"`)
	}
	bp, err := st.BatchPaidCalls(ctx, "", "cdn")
	require.NoError(t, err)
	assert.Equal(t, int64(30), bp, "the batch's paid calls count each once")
}
