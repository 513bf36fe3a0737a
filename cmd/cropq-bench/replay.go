package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/webui"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// benchReplay is `make bench-replay`: the admission work of replaying
// o.replayN failed requests of one batch (each back to queued with its
// backlog entry, its batch's counts moved back), against enqueueing the
// same number of new requests in the same run; the dry run that counts
// them; and the failures page over them.
func benchReplay(ctx context.Context, env *benchEnv, o options, progress io.Writer) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 64})
	defer rdb.Close()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return nil, err
	}
	prod := producer.New(rdb, producer.Config{Concurrency: 32, Backlog: true})
	defer prod.Close()
	st := records.NewStore(rdb, status.Config{})
	n := o.replayN

	fmt.Fprintf(progress, "bench-replay: enqueueing %d requests (the baseline) …\n", n)
	start := time.Now()
	if err := fillBatch(ctx, prod, "wave", 0, n); err != nil {
		return nil, err
	}
	enqueue := time.Since(start)
	fmt.Fprintf(progress, "bench-replay: failing them …\n")
	// The entries wait in the backlog still (no feeder runs): what the
	// replay adds is counted from here.
	bl := backlog.New(rdb, backlog.Config{})
	if err := finish(ctx, st, 0, 0, n); err != nil {
		return nil, err
	}
	before, err := bl.Size(ctx)
	if err != nil {
		return nil, err
	}

	ui, err := webui.New(webui.Config{Records: st, Batches: prod, Links: noLinks{}, Replay: prod.Replay,
		Tenant: func(r *http.Request) (string, bool) { return tasks.DefaultTenant, true }})
	if err != nil {
		return nil, err
	}
	page, err := timeIt(3, func() error {
		rec := httptest.NewRecorder()
		ui.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, webui.Root+"failures?batch=wave", nil))
		if rec.Code != http.StatusOK {
			return fmt.Errorf("failures page: %d", rec.Code)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	start = time.Now()
	dry, err := prod.Replay(ctx, producer.ReplayFilter{BatchID: "wave"}, true, "bench")
	if err != nil {
		return nil, err
	}
	dryTook := time.Since(start)
	fmt.Fprintf(progress, "bench-replay: replaying %d …\n", dry.Matched)
	start = time.Now()
	res, err := prod.Replay(ctx, producer.ReplayFilter{BatchID: "wave"}, false, "bench")
	if err != nil {
		return nil, err
	}
	took := time.Since(start)
	counts, err := st.BatchCounts(ctx, "", "wave")
	if err != nil {
		return nil, err
	}
	after, err := bl.Size(ctx)
	if err != nil {
		return nil, err
	}
	waiting := after - before
	ok := res.Replayed == n && counts[status.Queued] == int64(n) && waiting == int64(n)
	rate := func(d time.Duration) string { return fmt.Sprintf("%.0f /s", float64(n)/d.Seconds()) }
	_ = rdb.FlushDB(ctx).Err()
	return []row{
		{"replay", fmt.Sprintf("enqueue %d new requests, library batches of 1,000 (baseline)", n), fmt.Sprintf("%.1f s (%s)", enqueue.Seconds(), rate(enqueue)), "1.00", "", ""},
		{"replay", fmt.Sprintf("replay %d failed requests of a batch: back to queued, entries, counts (replayed %d, queued %d, entries %d)", n, res.Replayed, counts[status.Queued], waiting),
			fmt.Sprintf("%.1f s (%s)", took.Seconds(), rate(took)), fmt.Sprintf("%.2f", took.Seconds()/enqueue.Seconds()), "< 60 s", verdict(ok && took < time.Minute)},
		{"replay", fmt.Sprintf("  … its dry run (%d matched)", dry.Matched), ms(dryTook), fmt.Sprintf("%.3f", dryTook.Seconds()/enqueue.Seconds()), "", ""},
		{"replay", fmt.Sprintf("/ui/failures over %d failures (groups and samples), median of 3", n), ms(page.median), fmt.Sprintf("%.3f", page.median.Seconds()/enqueue.Seconds()), "< 5 s", verdict(page.median < 5*time.Second)},
	}, nil
}

// noLinks makes no links: the failures page has none to make.
type noLinks struct{}

func (noLinks) GetURL(context.Context, string, string, string) (string, error) { return "", nil }
