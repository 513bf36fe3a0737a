package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// finished reads the records of ids and returns those that succeeded,
// ordered by when they did.
func (s *stack) finished(t *testing.T, ids []string) []status.Record {
	t.Helper()
	st := records.NewStore(s.rdb, status.Config{})
	var out []status.Record
	for _, id := range ids {
		rec, err := st.Get(context.Background(), id)
		require.NoError(t, err)
		if rec.State == status.Succeeded {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UpdatedAt.Before(out[j].UpdatedAt) })
	return out
}

// awaitAll waits until every id is terminal.
func (s *stack) awaitAll(t *testing.T, ids []string, timeout time.Duration) {
	t.Helper()
	st := records.NewStore(s.rdb, status.Config{})
	require.Eventually(t, func() bool {
		for _, id := range ids {
			rec, err := st.Get(context.Background(), id)
			if err != nil || !rec.State.Terminal() {
				return false
			}
		}
		return true
	}, timeout, 100*time.Millisecond)
}

// bulkFile writes a JSONL file of n URL crops named prefix-i.
func (s *stack) bulkFile(t *testing.T, prefix string, n int, extra string) (string, []string) {
	t.Helper()
	var b strings.Builder
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%03d", prefix, i)
		ids = append(ids, id)
		fmt.Fprintf(&b, `{"requestId":%q,"imageUrl":%q,"targetWidth":300,"targetHeight":300%s}`+"\n", id, s.images+"/"+firstImage(t), extra)
	}
	path := filepath.Join(t.TempDir(), prefix+".jsonl")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	return path, ids
}

// Urgent requests, whichever way they come in, jump a backfill backlog: they
// wait for about the fed window, not for the backlog.
func TestUrgentJumpsTheBacklogThroughEveryEntrance(t *testing.T) {
	s := newStack(t, stackOptions{emulatorRate: 10})
	apiAddr := freeAddr(t)
	s.env = append(s.env, "CROPQ_QUOTA_RATE=8", "CROPQ_QUOTA_BURST=1", "CROPQ_FEED_LEAD=1s",
		"CROPQ_API_TOKENS="+frontDoorToken, "CROPQ_API_ADDR="+apiAddr)
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")

	path, backfill := s.bulkFile(t, "bf", 120, `,"priority":"backfill"`)
	out, err := s.cropq("enqueue", "--file", path, "--no-progress")
	require.NoError(t, err, out)
	s.startWorker()
	st := records.NewStore(s.rdb, status.Config{})
	require.Eventually(t, func() bool { return len(s.finished(t, backfill)) >= 8 }, 60*time.Second, 100*time.Millisecond,
		"the backfill is under way")

	// One urgent request through each entrance.
	img := s.images + "/" + firstImage(t)
	urgent := []string{"u-http", "u-batch", "u-jsonl", "u-csv", "u-cli", "u-lib"}
	submitted := time.Now()
	code, b := (frontDoor{stack: s, base: base}).post(t, "/v1/crops",
		fmt.Sprintf(`{"requestId":"u-http","imageUrl":%q,"targetWidth":300,"targetHeight":300,"priority":"urgent"}`, img))
	require.Equal(t, 202, code, "%s", b)
	code, b = (frontDoor{stack: s, base: base}).post(t, "/v1/crops/batch",
		fmt.Sprintf(`{"items":[{"requestId":"u-batch","imageUrl":%q,"targetWidth":300,"targetHeight":300,"priority":"urgent"}]}`, img))
	require.Equal(t, 202, code, "%s", b)
	dir := t.TempDir()
	jsonl := filepath.Join(dir, "u.jsonl")
	require.NoError(t, os.WriteFile(jsonl, []byte(fmt.Sprintf(`{"requestId":"u-jsonl","imageUrl":%q,"targetWidth":300,"targetHeight":300,"priority":"urgent"}`+"\n", img)), 0o644))
	out, err = s.cropq("enqueue", "--file", jsonl, "--no-progress")
	require.NoError(t, err, out)
	csvPath := filepath.Join(dir, "u.csv")
	require.NoError(t, os.WriteFile(csvPath, []byte("requestId,imageUrl,targetWidth,targetHeight,priority\nu-csv,"+img+",300,300,urgent\n"), 0o644))
	out, err = s.cropq("enqueue", "--file", csvPath, "--no-progress")
	require.NoError(t, err, out)
	out, err = s.cropq("enqueue", "--request-id", "u-cli", "--url", img, "--width", "300", "--height", "300", "--priority", "urgent")
	require.NoError(t, err, out)
	prod := producer.New(s.rdb, producer.Config{Backlog: true, Task: tasks.Options{Limits: localLimits}})
	t.Cleanup(func() { _ = prod.Close() })
	res := prod.Enqueue(context.Background(), tasks.Request{RequestID: "u-lib", ImageURL: img, Params: tasks.Params{TargetWidth: 300, TargetHeight: 300, Priority: "urgent"}})
	require.NoError(t, res.Err)

	s.awaitAll(t, urgent, 60*time.Second)
	var last time.Time
	for _, id := range urgent {
		rec, err := st.Get(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, status.Succeeded, rec.State, id)
		assert.Equal(t, "urgent", rec.Priority, id)
		if rec.UpdatedAt.After(last) {
			last = rec.UpdatedAt
		}
	}
	took := last.Sub(submitted)
	done := 0
	for _, rec := range s.finished(t, backfill) {
		if !rec.UpdatedAt.After(last) {
			done++
		}
	}
	t.Logf("6 urgent requests done %s after submission; %d of 120 backfill done by then", took.Round(time.Millisecond), done)
	// 120 backfill at 8/s take 15 s; the urgent ones wait for the window
	// (about a second of calls, plus the workers' slots), not the backlog.
	assert.Less(t, done, 60, "the urgent requests did not wait for the backlog")
	assert.Less(t, took, 8*time.Second)
	s.awaitAll(t, backfill, 90*time.Second)
}

// Two tenants with backlogs share the calls by weight; the calls of each
// are paid once.
func TestTenantsShareByWeight(t *testing.T) {
	s := newStack(t, stackOptions{emulatorRate: 12})
	s.env = append(s.env, "CROPQ_QUOTA_RATE=10", "CROPQ_QUOTA_BURST=1", "CROPQ_FEED_LEAD=1s", "CROPQ_TENANT_WEIGHTS=acme=3,globex=1")
	pathA, a := s.bulkFile(t, "acme", 90, `,"tenant":"acme"`)
	pathG, g := s.bulkFile(t, "globex", 90, `,"tenant":"globex"`)
	for _, p := range []string{pathA, pathG} {
		out, err := s.cropq("enqueue", "--file", p, "--no-progress")
		require.NoError(t, err, out)
	}
	s.startWorker()
	s.awaitAll(t, append(append([]string{}, a...), g...), 120*time.Second)

	// While both had a backlog (until acme's ran out), count who finished.
	all := s.finished(t, append(append([]string{}, a...), g...))
	require.Len(t, all, 180)
	var nA, nG int
	for _, rec := range all {
		if rec.Tenant == "acme" {
			nA++
		} else {
			nG++
		}
		if nA == 90 {
			break
		}
	}
	share := float64(nA) / float64(nA+nG)
	t.Logf("while both had work: acme %d, globex %d (acme's share %.2f, weight 3:1)", nA, nG, share)
	assert.InDelta(t, 0.75, share, 0.08)
	for _, rec := range all {
		assert.Equal(t, 1, rec.PaidCalls, rec.RequestID)
	}

	// Once acme is done, globex is alone and gets the whole quota
	// (work-conserving), not its quarter.
	var acmeDone time.Time
	var alone []status.Record
	for _, rec := range all {
		if rec.Tenant == "acme" {
			acmeDone = rec.UpdatedAt
		}
	}
	for _, rec := range all {
		if rec.Tenant == "globex" && rec.UpdatedAt.After(acmeDone.Add(2*time.Second)) {
			alone = append(alone, rec)
		}
	}
	require.GreaterOrEqual(t, len(alone), 20, "globex had work left alone")
	rate := float64(len(alone)-1) / alone[len(alone)-1].UpdatedAt.Sub(alone[0].UpdatedAt).Seconds()
	t.Logf("globex alone: %.1f calls/s (quota 10/s)", rate)
	assert.Greater(t, rate, 7.0, "a tenant alone gets (nearly) the whole quota, not a quarter of it")
}

// localLimits accept the test's image server on loopback.
var localLimits = cropapi.Limits{AllowPrivateHosts: true}

func newTestBacklog(s *stack) *backlog.Backlog { return backlog.New(s.rdb, backlog.Config{}) }

// A batch reports its tenant, lane, what remains and when it will be done;
// cropq wait shows the same.
func TestBatchReportsItsETA(t *testing.T) {
	s := newStack(t, stackOptions{emulatorRate: 10})
	apiAddr := freeAddr(t)
	s.env = append(s.env, "CROPQ_QUOTA_RATE=8", "CROPQ_QUOTA_BURST=1", "CROPQ_FEED_LEAD=1s",
		"CROPQ_API_TOKENS=acme:tok-a-0123456789", "CROPQ_API_ADDR="+apiAddr)
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")
	var items []string
	for i := range 48 {
		items = append(items, fmt.Sprintf(`{"requestId":"eta-%02d","imageUrl":%q,"targetWidth":300,"targetHeight":300}`, i, s.images+"/"+firstImage(t)))
	}
	code, _, b := apiDo(t, "POST", base+"/v1/crops/batch", "tok-a-0123456789", `{"batchId":"eta-batch","items":[`+strings.Join(items, ",")+`]}`)
	require.Equal(t, 202, code, "%s", b)

	type batchStatus struct {
		Tenant, Priority string
		Total, Remaining int64
		Done             bool
		ETASeconds       *float64
	}
	get := func() batchStatus {
		code, _, b := apiDo(t, "GET", base+"/v1/batches/eta-batch", "tok-a-0123456789", "")
		require.Equal(t, 200, code, "%s", b)
		var bs batchStatus
		require.NoError(t, json.Unmarshal(b, &bs))
		return bs
	}
	bs := get()
	assert.Equal(t, "acme", bs.Tenant)
	assert.Equal(t, "normal", bs.Priority)
	assert.Equal(t, int64(48), bs.Remaining)
	require.NotNil(t, bs.ETASeconds)
	assert.InDelta(t, 6, *bs.ETASeconds, 1, "48 at 8/s")

	s.startWorker()
	var at25 batchStatus
	require.Eventually(t, func() bool { at25 = get(); return at25.Remaining <= 36 }, 60*time.Second, 50*time.Millisecond)
	from := time.Now()
	out, err := s.cropq("wait", "--batch", "eta-batch", "--tenant", "acme", "--interval", "100ms", "--timeout", "60s")
	require.NoError(t, err, out)
	took := time.Since(from)
	require.NotNil(t, at25.ETASeconds)
	t.Logf("at 25%% done the estimate was %.1fs; it took %s", *at25.ETASeconds, took.Round(100*time.Millisecond))
	assert.InDelta(t, took.Seconds(), *at25.ETASeconds, 0.35*took.Seconds()+0.5)
	assert.Contains(t, out, "48/48 done (succeeded 48)")
	done := get()
	assert.True(t, done.Done)
	assert.Zero(t, done.Remaining)
}

// A request canceled while it waits in the backlog stays canceled and is
// never paid for, though its entry is fed.
func TestCancelInTheBacklog(t *testing.T) {
	s := newStack(t, stackOptions{})
	apiAddr := freeAddr(t)
	s.env = append(s.env, "CROPQ_API_TOKENS="+frontDoorToken, "CROPQ_API_ADDR="+apiAddr)
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")
	img := s.images + "/" + firstImage(t)
	for _, id := range []string{"bl-cancel", "bl-after"} {
		code, _, b := apiDo(t, "POST", base+"/v1/crops", frontDoorToken, fmt.Sprintf(`{"requestId":%q,"imageUrl":%q,"targetWidth":300,"targetHeight":300}`, id, img))
		require.Equal(t, 202, code, "%s", b)
	}
	assert.ElementsMatch(t, []string{"bl-cancel", "bl-after"}, waitingIDs(t, s.rdb), "both wait in the backlog")
	code, _, b := apiDo(t, "GET", base+"/v1/crops/bl-cancel", frontDoorToken, "")
	require.Equal(t, 200, code)
	assert.Contains(t, string(b), `"state":"queued"`)
	code, _, b = apiDo(t, "DELETE", base+"/v1/crops/bl-cancel", frontDoorToken, "")
	require.Equal(t, 200, code, "%s", b)

	s.startWorker()
	s.awaitState("bl-after", 60*time.Second, status.Succeeded)
	require.Eventually(t, func() bool { return len(waitingIDs(t, s.rdb)) == 0 }, 30*time.Second, 50*time.Millisecond, "the backlog drains")
	rec := s.record("bl-cancel")
	assert.Equal(t, status.Canceled, rec.State)
	assert.Zero(t, rec.PaidCalls)
	assert.Equal(t, int64(1), s.stats().Usage, "only bl-after was paid for")
}

// A Redis at its memory limit answers reads and refuses writes: the
// worker's and the API's /readyz say so, and cropq_redis_writable is 0,
// until the limit is raised.
func TestReadinessSaysRedisRefusesWrites(t *testing.T) {
	s := newStack(t, stackOptions{})
	apiAddr, opsAddr := freeAddr(t), freeAddr(t)
	s.env = append(s.env, "CROPQ_API_TOKENS="+frontDoorToken, "CROPQ_API_ADDR="+apiAddr)
	s.start("api", "api")
	s.awaitHTTP("http://" + apiAddr + "/healthz")
	s.startWorker("CROPQ_WORKER_ADDR=" + opsAddr)
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ready := func(want int) {
		t.Helper()
		for _, u := range []string{"http://" + opsAddr + "/readyz", "http://" + apiAddr + "/readyz"} {
			require.Eventually(t, func() bool { code, _ := get(u); return code == want }, 30*time.Second, 100*time.Millisecond, "%s answers %d", u, want)
		}
	}
	ready(200)
	ctx := context.Background()
	require.NoError(t, s.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	require.NoError(t, s.rdb.ConfigSet(ctx, "maxmemory", "1").Err())
	t.Cleanup(func() { _ = s.rdb.ConfigSet(context.Background(), "maxmemory", "0").Err() })
	ready(503)
	_, body := get("http://" + opsAddr + "/readyz")
	assert.Contains(t, body, "refuses writes")
	_, m := get("http://" + opsAddr + "/metrics")
	assert.Contains(t, m, "cropq_redis_writable 0")
	require.NoError(t, s.rdb.ConfigSet(ctx, "maxmemory", "0").Err())
	ready(200)
	_, m = get("http://" + opsAddr + "/metrics")
	assert.Contains(t, m, "cropq_redis_writable 1")
}
