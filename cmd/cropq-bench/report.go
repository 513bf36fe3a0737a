package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/namespace"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/reports"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

const reportBenchToken = "bench-report-token-0123456789"

// benchReport is `make bench-report`: a done batch of o.reportN requests
// (its report's list and its records, written directly: the fixture, not
// the measure), its report streamed by StreamReport, through the HTTP
// route and into S3, against two baselines of the same run: reading the
// records one by one (what a pipeline without reports does, on a sample
// of o.reportBaselineN) and reading the whole list in one reply (a report
// held in memory). Then a running batch: o.reportN members of which 10 %
// have not ended (their records read from the batch's ids). Throughput in
// lines/s; peak Go heap above the idle heap, sampled every 5 ms.
func benchReport(ctx context.Context, env *benchEnv, o options, progress io.Writer) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 16})
	defer rdb.Close()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return nil, err
	}
	st := records.NewStore(rdb, status.Config{})
	n := o.reportN
	fmt.Fprintf(progress, "bench-report: writing a done batch of %d requests …\n", n)
	if err := fillReport(ctx, rdb, st, "cat", n, n); err != nil {
		return nil, err
	}

	listBytes, err := rdb.MemoryUsage(ctx, st.ReportKey("", "cat"), 0).Result()
	if err != nil {
		return nil, fmt.Errorf("memory usage of the report: %w", err)
	}

	// The report, streamed.
	var lines int64
	stream := func() error {
		s, err := st.WriteReport(ctx, "", "cat", io.Discard)
		lines = s.Lines
		if err == nil && (s.Lines != int64(n) || !s.Done) {
			err = fmt.Errorf("report of %d lines (done %v), want %d", s.Lines, s.Done, n)
		}
		return err
	}
	d, heap, err := measure(stream)
	if err != nil {
		return nil, err
	}
	rate := float64(lines) / d.Seconds()

	// Baseline: the records one by one.
	fmt.Fprintf(progress, "bench-report: baseline, %d records one by one …\n", o.reportBaselineN)
	oneByOne := func() error {
		for i := range o.reportBaselineN {
			rec, err := st.Get(ctx, benchReportID(i))
			if err != nil {
				return err
			}
			if _, err := json.Marshal(records.ReportLineOf(rec)); err != nil {
				return err
			}
		}
		return nil
	}
	bd, bheap, err := measure(oneByOne)
	if err != nil {
		return nil, err
	}
	brate := float64(o.reportBaselineN) / bd.Seconds()

	// Baseline: the whole list in one reply.
	whole := func() error {
		all, err := rdb.LRange(ctx, st.ReportKey("", "cat"), 0, -1).Result()
		if err == nil && len(all) != n {
			err = fmt.Errorf("%d lines, want %d", len(all), n)
		}
		runtime.KeepAlive(all)
		return err
	}
	wd, wheap, err := measure(whole)
	if err != nil {
		return nil, err
	}

	// Through the API: GET /v1/batches/cat/report, read by a client.
	prod := producer.New(rdb, producer.Config{})
	defer prod.Close()
	api, err := httpapi.New(prod, httpapi.Config{Tokens: []string{reportBenchToken}})
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	overHTTP := func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/batches/cat/report", nil)
		req.Header.Set("Authorization", "Bearer "+reportBenchToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || resp.Trailer.Get(httpapi.ReportLinesTrailer) != fmt.Sprint(n) {
			return fmt.Errorf("report over HTTP: %d, %s lines", resp.StatusCode, resp.Trailer.Get(httpapi.ReportLinesTrailer))
		}
		return nil
	}
	hd, hheap, err := measure(overHTTP)
	if err != nil {
		return nil, err
	}

	// Into S3, as the report writer does for a batch with a destination.
	s3c, err := env.newBucket(ctx, "bench-report")
	if err != nil {
		return nil, err
	}
	if err := st.ExpectReport(ctx, "", "cat", "s3://bench-report/reports/"); err != nil {
		return nil, err
	}
	w := reports.New(st, reports.NewUploader(s3c, 0), reports.Config{Walls: namespace.Walls{DefaultBucket: "bench-report"}})
	toS3 := func() error {
		k, err := w.WriteDue(ctx)
		if err == nil && k != 1 {
			err = fmt.Errorf("%d reports written, want 1", k)
		}
		return err
	}
	sd, sheap, err := measure(toS3)
	if err != nil {
		return nil, err
	}

	// A running batch: 10 % of its requests still queued.
	fmt.Fprintf(progress, "bench-report: a running batch of %d requests, %d still queued …\n", n, n/10)
	if err := fillReport(ctx, rdb, st, "run", n, n-n/10); err != nil {
		return nil, err
	}
	running := func() error {
		s, err := st.WriteReport(ctx, "", "run", io.Discard)
		if err == nil && (s.Lines != int64(n) || s.Done) {
			err = fmt.Errorf("report of %d lines (done %v), want %d", s.Lines, s.Done, n)
		}
		return err
	}
	rd, rheap, err := measure(running)
	if err != nil {
		return nil, err
	}

	mib := func(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	perS := func(k int, d time.Duration) string { return fmt.Sprintf("%.0f lines/s", float64(k)/d.Seconds()) }
	ratio := func(r float64) string { return fmt.Sprintf("%.2f", r) }
	const heapTarget = 32 << 20
	rows := []row{
		{"report", fmt.Sprintf("baseline: records one by one (GET each, a sample of %d); peak heap %s", o.reportBaselineN, mib(bheap)), fmt.Sprintf("%.0f lines/s", brate), "1.00", "", ""},
		{"report", fmt.Sprintf("baseline: the whole list in one reply (%d lines) in %s", n, ms(wd)), mib(wheap), "1.00", "", ""},
		{"report", fmt.Sprintf("StreamReport, done batch of %d, pages of %d, in %s", n, records.DefaultReportPage, ms(d)), fmt.Sprintf("%.0f lines/s", rate),
			ratio(rate / brate), "≥ 10× one by one", verdict(rate >= 10*brate)},
		{"report", "  … its peak heap (vs the whole list)", mib(heap), ratio(float64(heap) / float64(max(wheap, 1))), "< 32 MiB", verdict(heap < heapTarget)},
		{"report", fmt.Sprintf("GET /v1/batches/cat/report (server and client), %d lines in %s; peak heap %s", n, ms(hd), mib(hheap)), perS(n, hd),
			ratio(float64(n) / hd.Seconds() / brate), "< 32 MiB", verdict(hheap < heapTarget)},
		{"report", fmt.Sprintf("written to S3 (multipart, transfer manager), %d lines in %s; peak heap %s", n, ms(sd), mib(sheap)), perS(n, sd),
			ratio(float64(n) / sd.Seconds() / brate), "< 32 MiB", verdict(sheap < heapTarget)},
		{"report", fmt.Sprintf("StreamReport, running batch of %d (%d queued: ids, bitmaps, records) in %s; peak heap %s", n, n/10, ms(rd), mib(rheap)), perS(n, rd),
			ratio(float64(n) / rd.Seconds() / brate), "< 32 MiB", verdict(rheap < heapTarget)},
		{"report", "Redis per ended request: its line in the report's list (MEMORY USAGE)", fmt.Sprintf("%.0f B", float64(listBytes)/float64(n)), "", "", ""},
	}
	_ = rdb.FlushDB(ctx).Err()
	return rows, nil
}

func benchReportID(i int) string { return fmt.Sprintf("cat-%07d", i) }

// fillReport writes a batch of n requests: the first ended succeed (their
// records and report lines, as a worker's moves would leave them), the
// rest are queued; the batch's counts, ids and bitmaps to match.
func fillReport(ctx context.Context, rdb *redis.Client, st *records.Store, batch string, n, ended int) error {
	now := time.Now().UTC()
	const chunk = 2000
	for start := 0; start < n; start += chunk {
		pipe := rdb.Pipeline()
		var ids []any
		for i := start; i < min(start+chunk, n); i++ {
			id := fmt.Sprintf("%s-%07d", batch, i)
			ids = append(ids, id)
			rec := status.Record{RequestID: id, State: status.Queued, CreatedAt: now, Source: "url", Params: tasks.Params{BatchID: batch,
				TargetWidth: 800, TargetHeight: 800, Priority: "normal"}, BatchSeq: int64(i + 1),
				SourceURL:   "https://cdn.example.com/catalogue/" + id + ".jpg",
				Fingerprint: "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"}
			bit := "queued"
			if i < ended {
				rec.State, rec.Attempt, rec.UpdatedAt, rec.PaidCalls, rec.Usage = status.Succeeded, 1, now, 1, 1
				rec.Stored = &status.Stored{Bucket: "crops", Key: "products/" + id + "/800x800.jpg", ETag: `"9b2cf535f27731c974343645a3985328"`, Size: 48213}
				line, _ := json.Marshal(records.ReportLineOf(rec))
				pipe.RPush(ctx, st.ReportKey("", batch), line)
				bit = "succeeded"
			}
			b, _ := json.Marshal(rec)
			pipe.Set(ctx, st.Key(id), b, 0)
			pipe.SetBit(ctx, rediskey.Default.BatchState("", batch, bit), int64(i), 1)
		}
		pipe.RPush(ctx, rediskey.Default.BatchIDs("", batch), ids...)
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	fields := map[string]any{"succeeded": ended}
	if n > ended {
		fields["queued"] = n - ended
	}
	return rdb.HSet(ctx, rediskey.Default.Batch("", batch), fields).Err()
}

// measure runs f once and returns how long it took and its peak Go heap
// above the heap before it (after a GC), sampled every 5 ms.
func measure(f func() error) (time.Duration, uint64, error) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	base := before.HeapAlloc
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	err := f()
	d := time.Since(start)
	close(stop)
	wg.Wait()
	if peak < base {
		return d, 0, err
	}
	return d, peak - base, err
}
