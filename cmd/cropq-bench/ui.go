package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/webui"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

const uiBenchToken = "bench-operator-token"

// benchUI is `make bench-ui`: the server time of a batch's grid page (200
// results) in a batch of o.uiN requests, against the same page of a
// 1,000-request batch and against a full scan of the records (what paging
// by state costs without the batch index), and the index's Redis bytes per
// request.
func benchUI(ctx context.Context, env *benchEnv, o options, progress io.Writer) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 32})
	defer rdb.Close()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return nil, err
	}
	s3c, err := env.newBucket(ctx, "bench-ui")
	if err != nil {
		return nil, err
	}
	bl := backlog.New(rdb, backlog.Config{})
	prod := producer.New(rdb, producer.Config{Concurrency: 1, Backlog: true, Rate: func(context.Context) (float64, error) { return 20, nil }})
	defer prod.Close()
	st := records.NewStore(rdb, status.Config{})
	ui, err := webui.New(webui.Config{Records: st, Batches: prod, Links: results.NewPresigner(s3c, 15*time.Minute), Backlog: bl,
		Tenant: func(r *http.Request) (string, bool) {
			_, pw, ok := r.BasicAuth()
			return tasks.DefaultTenant, ok && pw == uiBenchToken
		}})
	if err != nil {
		return nil, err
	}

	big, small := "big", "small"
	usedBefore, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "bench-ui: queueing %d requests in batch %s …\n", o.uiN, big)
	if err := fillBatch(ctx, prod, big, 0, o.uiN); err != nil {
		return nil, err
	}
	usedAfter, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}
	var indexBytes int64
	for _, k := range []string{rediskey.Default.BatchIDs("", big), rediskey.Default.BatchState("", big, string(status.Queued))} {
		n, err := rdb.MemoryUsage(ctx, k, 0).Result()
		if err != nil {
			return nil, fmt.Errorf("memory usage of %s: %w", k, err)
		}
		indexBytes += n
	}
	// Each record also carries its place: `,"batchSeq":N`.
	var seqBytes int64
	for i := 1; i <= o.uiN; i++ {
		seqBytes += int64(len(`,"batchSeq":`) + len(strconv.Itoa(i)))
	}
	perRequest := float64(usedAfter-usedBefore) / float64(o.uiN)
	perIndex := float64(indexBytes+seqBytes) / float64(o.uiN)

	fmt.Fprintf(progress, "bench-ui: moving %d to succeeded and %d to failed …\n", o.uiDone, o.uiFailed)
	if err := finish(ctx, st, 0, o.uiDone, o.uiFailed); err != nil {
		return nil, err
	}
	if err := fillBatch(ctx, prod, small, o.uiN, 1000); err != nil {
		return nil, err
	}
	if err := finish(ctx, st, o.uiN, o.uiDone*1000/o.uiN, max(1, o.uiFailed*1000/o.uiN)); err != nil {
		return nil, err
	}

	page := func(batch, query string) func() error {
		return func() error {
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, webui.Root+"batches/"+batch+query, nil)
			req.SetBasicAuth("bench", uiBenchToken)
			rec := httptest.NewRecorder()
			ui.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				return fmt.Errorf("%s%s: %d %s", batch, query, rec.Code, rec.Body.String())
			}
			if n := strings.Count(rec.Body.String(), `class="card `); n != webui.PageSize {
				return fmt.Errorf("%s%s: %d cards, want %d", batch, query, n, webui.PageSize)
			}
			return nil
		}
	}
	const reps = 30
	deep := (o.uiN-o.uiDone-o.uiFailed)/webui.PageSize - 1 // the last full page of queued requests
	base, err := timeIt(reps, page(small, ""))
	if err != nil {
		return nil, err
	}
	type variant struct {
		name, query string
	}
	variants := []variant{
		{"page 1, every state (failures first)", ""},
		{"succeeded, page 10", "?state=succeeded&page=10"},
		{fmt.Sprintf("queued, page %d (offset %d)", deep, (deep-1)*webui.PageSize), fmt.Sprintf("?state=queued&page=%d", deep)},
	}
	rows := []row{{"ui", fmt.Sprintf("grid page, 200 results, 1,000-request batch (baseline), median of %d", reps), ms(base.median), "1.00", "", ""}}
	for _, v := range variants {
		d, err := timeIt(reps, page(big, v.query))
		if err != nil {
			return nil, err
		}
		rows = append(rows, row{"ui", fmt.Sprintf("  … %d-request batch, %s; p95 %s", o.uiN, v.name, ms(d.p95)), ms(d.median),
			fmt.Sprintf("%.2f", d.median.Seconds()/base.median.Seconds()), "< 200 ms", verdict(d.p95 < 200*time.Millisecond)})
	}
	scan, err := timeIt(3, func() error { return fullScanPage(ctx, rdb, big, status.Failed, 0, webui.PageSize) })
	if err != nil {
		return nil, err
	}
	rows = append(rows,
		row{"ui", fmt.Sprintf("  … without the index: scan every record, failed, page 1 (%d records), median of 3", o.uiN+1000), ms(scan.median),
			fmt.Sprintf("%.2f", scan.median.Seconds()/base.median.Seconds()), "", ""},
		row{"ui", fmt.Sprintf("Redis per queued request in a batch, %d URL requests (record, backlog entry, index)", o.uiN), fmt.Sprintf("%.0f B", perRequest), "1.00", "", ""},
		row{"ui", fmt.Sprintf("  … of which the batch index: id list and queued bitmap (MEMORY USAGE) %.1f B, place in the record %.1f B",
			float64(indexBytes)/float64(o.uiN), float64(seqBytes)/float64(o.uiN)), fmt.Sprintf("%.1f B", perIndex),
			fmt.Sprintf("%.2f", perIndex/perRequest), "small", verdict(perIndex/perRequest < 0.25)},
	)
	_ = rdb.FlushDB(ctx).Err()
	return rows, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

type timing struct{ median, p95 time.Duration }

// timeIt runs f once to warm up, then n times.
func timeIt(n int, f func() error) (timing, error) {
	if err := f(); err != nil {
		return timing{}, err
	}
	ds := make([]time.Duration, n)
	for i := range ds {
		start := time.Now()
		if err := f(); err != nil {
			return timing{}, err
		}
		ds[i] = time.Since(start)
	}
	slices.Sort(ds)
	return timing{median: ds[n/2], p95: ds[min(n-1, n*95/100)]}, nil
}

// fillBatch queues n typical requests, from the first'th, in batch.
func fillBatch(ctx context.Context, prod *producer.Producer, batch string, first, n int) error {
	const chunk = 1000
	for i := first; i < first+n; i += chunk {
		var reqs []tasks.Request
		for j := i; j < min(i+chunk, first+n); j++ {
			r := typicalRequest(j)
			r.BatchID = batch
			reqs = append(reqs, r)
		}
		if err := checkResults(prod.EnqueueBatch(ctx, reqs)); err != nil {
			return err
		}
	}
	return nil
}

// finish moves requests first… through the transitions a worker makes:
// done of them to succeeded (with a stored object), then failed more to
// failed.
func finish(ctx context.Context, st *records.Store, first, done, failed int) error {
	jobs := make(chan int)
	errc := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				id := typicalRequest(i).RequestID
				steps := []records.Update{{To: status.Running, Attempt: 1}}
				if i < first+done {
					steps = append(steps,
						records.Update{To: status.Cropped, Attempt: 1, PaidUsage: 1, Checkpoint: &status.Checkpoint{ResultURL: "https://oss.example.com/r", Width: 800, Height: 800, APIRequestID: "req-" + id}},
						records.Update{To: status.Succeeded, Attempt: 1, Stored: &status.Stored{Bucket: "bench-ui", Key: "crops/" + id + "/800x800.jpg", Size: 81234, ContentType: "image/jpeg", Width: 800, Height: 800}})
				} else {
					steps = append(steps, records.Update{To: status.Failed, Attempt: 1, ErrorCode: "1001", ErrorMessage: "image could not be decoded"})
				}
				for _, u := range steps {
					if _, err := st.Transition(ctx, id, u); err != nil {
						errc <- err
						return
					}
				}
			}
		}()
	}
	var err error
feed:
	for i := first; i < first+done+failed; i++ {
		select {
		case jobs <- i:
		case err = <-errc:
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(errc)
	return errors.Join(err, <-errc)
}

// fullScanPage is the grid page without the index: read every record,
// keep the batch's in state st, order them by creation, take a page.
func fullScanPage(ctx context.Context, rdb *redis.Client, batch string, st status.State, offset, limit int) error {
	var keep []status.Record
	iter := rdb.Scan(ctx, 0, rediskey.Default.StatusPattern(), 1000).Iterator()
	var keys []string
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		vals, err := rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue
			}
			var r status.Record
			if err := json.Unmarshal([]byte(s), &r); err != nil {
				return err
			}
			if r.BatchID == batch && r.State == st {
				keep = append(keep, r)
			}
		}
		keys = keys[:0]
		return nil
	}
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := errors.Join(iter.Err(), flush()); err != nil {
		return err
	}
	slices.SortFunc(keep, func(a, b status.Record) int { return a.CreatedAt.Compare(b.CreatedAt) })
	if len(keep) < offset+min(limit, len(keep)) {
		return fmt.Errorf("full scan: %d records, want a page from %d", len(keep), offset)
	}
	return nil
}
