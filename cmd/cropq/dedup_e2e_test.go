package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Result reuse and coalescing (package dedup) through real processes:
// cropq workers, the emulator, redis-server and MinIO.

// dedupStack is a stack whose workers reuse results in scope.
func dedupStack(t *testing.T, scope string) (*stack, *producer.Producer) {
	t.Helper()
	s := newStack(t, stackOptions{})
	s.env = append(s.env, "CROPQ_DEDUP_SCOPE="+scope) // the last value wins over the stack's "off"
	prod := producer.New(s.rdb, producer.Config{Task: tasks.Options{MaxRetry: 20, Limits: cropapi.Limits{AllowPrivateHosts: true}}})
	t.Cleanup(func() { _ = prod.Close() })
	return s, prod
}

// submit enqueues reqs through the Go library and requires each enqueued.
func submit(t *testing.T, prod *producer.Producer, reqs ...tasks.Request) {
	t.Helper()
	for _, r := range prod.EnqueueBatch(context.Background(), reqs) {
		require.Equal(t, producer.Enqueued, r.Outcome, "%s: %v", r.Record.RequestID, r.Err)
	}
}

// stored waits for id to succeed and returns its record.
func (s *stack) stored(t *testing.T, id string, timeout time.Duration) status.Record {
	t.Helper()
	rec := s.awaitState(id, timeout, status.Succeeded, status.Failed)
	require.Equal(t, status.Succeeded, rec.State, "%s: %s %s", id, rec.ErrorCode, rec.ErrorMessage)
	return rec
}

// objectBytes reads a stored object.
func (s *stack) objectBytes(t *testing.T, key string) []byte {
	t.Helper()
	obj, err := s.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	require.NoError(t, err)
	defer obj.Body.Close()
	b, err := io.ReadAll(obj.Body)
	require.NoError(t, err)
	return b
}

// assertReused checks that rec reused from's result: no paid call, its own
// object at its own key, byte-identical to from's.
func (s *stack) assertReused(t *testing.T, rec, from status.Record) {
	t.Helper()
	assert.Equal(t, from.RequestID, rec.ReusedFrom, rec.RequestID)
	assert.Zero(t, rec.PaidCalls, rec.RequestID)
	assert.Zero(t, rec.Usage, rec.RequestID)
	assert.Contains(t, rec.Stored.Key, "crops/"+rec.RequestID+"/", "its own key")
	assert.True(t, bytes.Equal(s.objectBytes(t, from.Stored.Key), s.objectBytes(t, rec.Stored.Key)), "%s: a byte-identical copy", rec.RequestID)
}

func TestE2EDedupReusesStoredResults(t *testing.T) {
	s, prod := dedupStack(t, "tenant")
	s.startWorker()
	img := s.images + "/" + firstImage(t)
	req := func(id string) tasks.Request {
		return tasks.Request{RequestID: id, ImageURL: img, Params: tasks.Params{TargetWidth: 300, TargetHeight: 300, BatchID: "dd"}}
	}
	const wait = 60 * time.Second

	// The first pays; the same crop under another request id reuses it.
	submit(t, prod, req("dd-a"))
	a := s.stored(t, "dd-a", wait)
	assert.Equal(t, 1, a.PaidCalls)
	assert.Empty(t, a.ReusedFrom)
	submit(t, prod, req("dd-b"))
	b := s.stored(t, "dd-b", wait)
	s.assertReused(t, b, a)
	assert.Equal(t, int64(1), s.stats().Usage, "one paid call for two requests")

	// Another size is another crop.
	other := req("dd-size")
	other.TargetWidth = 400
	submit(t, prod, other)
	assert.Equal(t, 1, s.stored(t, "dd-size", wait).PaidCalls)

	// Opted out: paid for.
	optOut := req("dd-optout")
	no := false
	optOut.Dedup = &no
	submit(t, prod, optOut)
	rec := s.stored(t, "dd-optout", wait)
	assert.Equal(t, 1, rec.PaidCalls)
	assert.Empty(t, rec.ReusedFrom)

	// Scope tenant: another tenant's identical crop is its own.
	acme := req("dd-acme")
	acme.Tenant = "acme"
	submit(t, prod, acme)
	rec = s.stored(t, "dd-acme", wait)
	assert.Equal(t, 1, rec.PaidCalls, "tenant scope: acme does not reuse the default tenant's result")
	assert.Empty(t, rec.ReusedFrom)

	// The reused object deleted by hand: the next request pays again, and
	// the one after reuses the new result.
	_, err := s.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(a.Stored.Key)})
	require.NoError(t, err)
	submit(t, prod, req("dd-c"))
	c := s.stored(t, "dd-c", wait)
	assert.Equal(t, 1, c.PaidCalls, "the stored result is gone: paid for again")
	assert.Empty(t, c.ReusedFrom)
	submit(t, prod, req("dd-d"))
	s.assertReused(t, s.stored(t, "dd-d", wait), c)
	assert.Equal(t, int64(5), s.stats().Usage, "a, size, optout, acme, c")

	// Saved calls: the batch's count and cropq status --quota.
	bi, err := prod.Batch(context.Background(), "", "dd")
	require.NoError(t, err)
	assert.Equal(t, int64(2), bi.Saved)
	assert.Equal(t, int64(6), bi.Counts[status.Succeeded], "saved is no state of its own")
	out, err := s.cropq("wait", "--batch", "dd")
	require.NoError(t, err)
	assert.Contains(t, out, "2 paid calls saved")
	out, err = s.cropq("status", "--quota")
	require.NoError(t, err)
	var q struct {
		CallsSaved map[string]int64 `json:"callsSaved"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &q), out)
	assert.Equal(t, map[string]int64{"reused": 2}, q.CallsSaved)
	// The record says whose result it is, through the CLI.
	out, err = s.cropq("status", "dd-d", "--json")
	require.NoError(t, err)
	assert.Contains(t, out, `"reusedFrom": "dd-c"`)

	// Scope global: tenants share results (a fresh key: the tenant is not
	// part of it).
	for _, p := range s.procs {
		if p.name == "worker" {
			p.stop()
		}
	}
	s.startWorker("CROPQ_DEDUP_SCOPE=global")
	g1, g2 := req("dd-globex"), req("dd-acme-2")
	g1.Tenant, g2.Tenant = "globex", "acme"
	submit(t, prod, g1)
	first := s.stored(t, "dd-globex", wait)
	assert.Equal(t, 1, first.PaidCalls)
	submit(t, prod, g2)
	rec = s.stored(t, "dd-acme-2", wait)
	// globex's request is not named to acme: a reference, which an
	// operator resolves.
	assert.True(t, dedup.IsRef(rec.ReusedFrom), "reusedFrom %q", rec.ReusedFrom)
	out, err = s.cropq("status", "--resolve-ref", rec.ReusedFrom)
	require.NoError(t, err)
	assert.Equal(t, "dd-globex\n", out)
	rec.ReusedFrom = first.RequestID
	s.assertReused(t, rec, first)
	assert.Equal(t, int64(6), s.stats().Usage)
}

// Twins submitted at once, picked up by two workers, make one paid call.
func TestE2EDedupCoalescesTwinsInFlight(t *testing.T) {
	s, prod := dedupStack(t, "tenant")
	s.setFaults(t, `{"latency":1500000000}`) // a slow call: the twins are all in flight during it
	ops := []string{freeAddr(t), freeAddr(t)}
	for _, addr := range ops {
		s.startWorker("CROPQ_WORKER_ADDR=" + addr)
		s.awaitHTTP("http://" + addr + "/healthz")
	}
	img := s.images + "/" + firstImage(t)
	var reqs []tasks.Request
	for i := range 6 {
		reqs = append(reqs, tasks.Request{RequestID: fmt.Sprintf("twin-%d", i), ImageURL: img, Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}})
	}
	submit(t, prod, reqs...)
	var payer status.Record
	recs := map[string]status.Record{}
	for _, r := range reqs {
		rec := s.stored(t, r.RequestID, 90*time.Second)
		recs[r.RequestID] = rec
		if rec.PaidCalls > 0 {
			payer = rec
		}
	}
	assert.Equal(t, int64(1), s.stats().Usage, "exactly one paid call for six twins")
	require.NotEmpty(t, payer.RequestID)
	assert.Equal(t, 1, payer.PaidCalls)
	for id, rec := range recs {
		if id != payer.RequestID {
			s.assertReused(t, rec, payer)
		}
	}
	// cropq_api_calls_saved_total: five calls saved across the two
	// workers, those that waited for the payer counted as coalesced.
	saved := map[string]float64{}
	for _, addr := range ops {
		for k, v := range scrape(t, "http://"+addr+"/metrics") {
			if strings.HasPrefix(k, "cropq_api_calls_saved_total") {
				saved[k] += v
			}
		}
	}
	assert.Equal(t, 5.0, saved["cropq_api_calls_saved_total{reason=coalesced}"]+saved["cropq_api_calls_saved_total{reason=reused}"], "%v", saved)
	assert.Positive(t, saved["cropq_api_calls_saved_total{reason=coalesced}"], "%v", saved)
}

// The worker paying for a crop is killed mid-call: its twin waits for the
// key's lease to expire. Then one of the two pays (the twin, or the dead
// owner's crop rescued onto the new worker, whichever takes the key first)
// and the other reuses that result: at most one extra paid call.
func TestE2EDedupOwnerKilledMidCall(t *testing.T) {
	s, prod := dedupStack(t, "tenant")
	s.setFaults(t, `{"latency":4000000000}`)
	s.startWorker()
	owner := s.workers[0]
	img := s.images + "/" + firstImage(t)
	submit(t, prod, tasks.Request{RequestID: "owner", ImageURL: img, Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}})
	// In the call: running, holding the claim.
	require.Eventually(t, func() bool {
		keys, err := s.rdb.Keys(context.Background(), rediskey.Default.DedupClaim("*")).Result()
		return err == nil && len(keys) == 1
	}, 30*time.Second, 20*time.Millisecond, "the owner takes the crop key's claim")
	require.NoError(t, owner.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	s.startWorker()
	submit(t, prod, tasks.Request{RequestID: "waiter", ImageURL: img, Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}})
	rec := s.stored(t, "waiter", 60*time.Second)
	took := time.Since(killed)
	own := s.stored(t, "owner", 60*time.Second)
	assert.Equal(t, 1, rec.PaidCalls+own.PaidCalls, "one paid call after the kill, by the waiter or the rescued owner")
	if rec.PaidCalls == 1 {
		assert.Empty(t, rec.ReusedFrom)
		assert.Equal(t, "waiter", own.ReusedFrom, "the rescued owner reuses the waiter's result")
	} else {
		assert.Equal(t, "owner", rec.ReusedFrom, "the waiter reuses the rescued owner's result")
	}
	// The dead owner's call may have been billed (the emulator answers it
	// anyway): one extra at most.
	assert.LessOrEqual(t, s.stats().Usage, int64(2))
	var waited bool
	for _, h := range rec.History {
		waited = waited || h.ErrorCode == "coalescing"
	}
	assert.True(t, waited, "the waiter was handed back while the lease lived: %v", rec.History)
	// Lease 10 s (renewed every ~3 s before the kill), then a 4 s call.
	assert.Less(t, took, 30*time.Second)
	t.Logf("owner killed → waiter stored: %s", took.Round(100*time.Millisecond))
}
