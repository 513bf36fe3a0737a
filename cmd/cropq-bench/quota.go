package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/localstack"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// quotaScenario is one fleet run against an emulator with quota Q.
type quotaScenario struct {
	name     string
	shared   bool    // CROPQ_QUOTA_SHARED
	ceiling  float64 // CROPQ_QUOTA_RATE, as a multiple of Q
	adaptive bool
}

type quotaResult struct {
	wall              time.Duration
	calls, ok, limit  int64 // API calls, 200s, 501s over the whole run
	p50, p99          time.Duration
	lateOK, lateLimit int64 // 200s and 501s in the second half (after convergence)
	lateCalls         int64
	lateWall          time.Duration
	calling           time.Duration // first to last billed call
}

// benchQuota runs the fleet (4 worker processes × concurrency 20) through N
// requests against the emulator's quota Q with the shared limiter, without
// it (each pod backs off on 501 alone: the baseline), and with a ceiling set
// to 2Q (the adaptive rate must find Q).
func benchQuota(ctx context.Context, env *benchEnv, o options, stderr io.Writer) ([]row, error) {
	bin, err := buildCropq(ctx, env)
	if err != nil {
		return nil, err
	}
	q := o.quotaQ
	scenarios := []quotaScenario{
		{name: "shared limiter (ceiling Q, adaptive)", shared: true, ceiling: 1, adaptive: true},
		{name: "no shared limiter (baseline: back off on 501)", shared: false, ceiling: 1},
		{name: "shared limiter, ceiling misconfigured at 2Q", shared: true, ceiling: 2, adaptive: true},
	}
	ideal := time.Duration(float64(o.quotaN) / q * float64(time.Second))
	results := make([]quotaResult, len(scenarios))
	for i, sc := range scenarios {
		fmt.Fprintf(stderr, "cropq-bench: quota: %s…\n", sc.name)
		if results[i], err = runQuotaScenario(ctx, env, bin, sc, o); err != nil {
			return nil, fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	base := results[1]
	var rows []row
	for i, sc := range scenarios {
		res := results[i]
		// Goodput is how well the fleet spends the quota while it has work:
		// billed calls per second from the first to the last, over Q (the
		// fleet's start-up and the last copy are in the wall time row).
		goodput := float64(res.ok-1) / res.calling.Seconds() / q
		share := float64(res.limit) / float64(max(res.calls, 1))
		r := []row{
			{"quota", sc.name + ": goodput (200s/s ÷ Q)", fmt.Sprintf("%.3f", goodput), fmt.Sprintf("%.2f", goodput/(float64(base.ok-1)/base.calling.Seconds()/q)), "", ""},
			{"quota", "  501 share of calls", fmt.Sprintf("%.2f %% (%d of %d)", 100*share, res.limit, res.calls), "", "", ""},
			{"quota", "  wall time (N/Q = " + ideal.String() + ")", res.wall.Round(100 * time.Millisecond).String(),
				fmt.Sprintf("%.2f", res.wall.Seconds()/base.wall.Seconds()), "", ""},
			{"quota", "  enqueue→stored p50 / p99", fmt.Sprintf("%s / %s", res.p50.Round(100*time.Millisecond), res.p99.Round(100*time.Millisecond)), "", "", ""},
		}
		switch i {
		case 0:
			r[0].target, r[0].verdict = "≥ 0.97", verdict(goodput >= 0.97)
			r[1].target, r[1].verdict = "≤ 1 %", verdict(share <= 0.01)
		case 2:
			lateGood := float64(res.lateOK) / res.lateWall.Seconds() / q
			lateShare := float64(res.lateLimit) / float64(max(res.lateCalls, 1))
			r = append(r,
				row{"quota", "  after convergence (2nd half): goodput", fmt.Sprintf("%.3f", lateGood), "", "≥ 0.90", verdict(lateGood >= 0.9)},
				row{"quota", "  after convergence: 501 share", fmt.Sprintf("%.2f %% (%d of %d)", 100*lateShare, res.lateLimit, res.lateCalls), "", "≤ 5 %", verdict(lateShare <= 0.05)})
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// syncWriter lets several processes share one log buffer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// buildCropq builds cmd/cropq into the run's directory, once a run.
func buildCropq(ctx context.Context, env *benchEnv) (string, error) {
	bin := filepath.Join(env.stack.Dir(), "cropq")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	return bin, localstack.Build(ctx, env.stack.Dir(), "cropq")
}

func runQuotaScenario(ctx context.Context, env *benchEnv, bin string, sc quotaScenario, o options) (res quotaResult, err error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr()})
	defer rdb.Close()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return res, err
	}
	img, err := sampleHandler("ball-offcentre.jpg")
	if err != nil {
		return res, err
	}
	emu, err := cropapitest.New(cropapitest.Config{AppKey: benchKey, AppSecret: benchSecret, Rate: o.quotaQ, CropCache: 4,
		Faults: cropapitest.Faults{Latency: 200 * time.Millisecond, LatencyJitter: 100 * time.Millisecond}})
	if err != nil {
		return res, err
	}
	api := httptest.NewServer(emu)
	defer api.Close()
	images := httptest.NewServer(img)
	defer images.Close()

	bucket := fmt.Sprintf("bench-quota-%d", time.Now().UnixNano())
	if _, err := env.newBucket(ctx, bucket); err != nil {
		return res, err
	}

	// Start the fleet first, so that enqueue→stored latency includes the
	// queueing a real burst of requests sees.
	fleetEnv := env.workerEnv(api.URL, bucket,
		"CROPQ_QUOTA_SHARED="+strconv.FormatBool(sc.shared),
		"CROPQ_QUOTA_ADAPTIVE="+strconv.FormatBool(sc.adaptive),
		"CROPQ_QUOTA_RATE="+strconv.FormatFloat(sc.ceiling*o.quotaQ, 'f', -1, 64),
		"CROPQ_MAX_RETRY=25",
	)
	var logs bytes.Buffer
	procs, err := env.startWorkers(bin, o.quotaPods, o.quotaConcurrency, fleetEnv, &syncWriter{w: &logs})
	defer func() {
		if werr := stopWorkers(ctx, procs, &logs); werr != nil && err == nil {
			err = werr
		}
	}()
	if err != nil {
		return res, err
	}

	statuses := records.NewStore(rdb, status.Config{})
	client := asynq.NewClientFromRedisClient(rdb)
	start := time.Now()
	for i := range o.quotaN {
		pl := tasks.CropPayload{Request: tasks.Request{RequestID: fmt.Sprintf("quota-%05d", i), ImageURL: images.URL + "/ball.jpg",
			Params: tasks.Params{TargetWidth: 800, TargetHeight: 800}}}
		task, opts, err := tasks.NewCropTask(pl, tasks.Options{Retention: time.Hour, MaxRetry: 25, Limits: cropapi.Limits{AllowPrivateHosts: true}})
		if err != nil {
			return res, err
		}
		if _, _, err := statuses.Create(ctx, status.Record{RequestID: pl.RequestID, Source: pl.Source()}); err != nil {
			return res, err
		}
		if _, err := client.EnqueueContext(ctx, task, opts...); err != nil {
			return res, err
		}
	}

	// Await completion, snapshotting the emulator's counters at half way.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var mid cropapitest.Stats
	var midAt time.Time
	deadline := time.After(15 * time.Minute)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-deadline:
			return res, errors.New("the fleet did not finish in 15 minutes")
		case <-tick.C:
		}
		info, err := insp.GetQueueInfo(tasks.DefaultQueue)
		if err != nil {
			continue
		}
		if info.Archived > 0 {
			return res, fmt.Errorf("%d tasks archived\n%s", info.Archived, logs.String())
		}
		if midAt.IsZero() && info.Completed >= o.quotaN/2 {
			mid, midAt = emu.Stats(), time.Now()
		}
		done = info.Completed >= o.quotaN
	}
	end, endAt := emu.Stats(), time.Now()
	res.wall = endAt.Sub(start)
	sum := func(st cropapitest.Stats) (calls int64) {
		for _, n := range st.Calls {
			calls += n
		}
		return calls
	}
	res.calls, res.ok, res.limit = sum(end), end.Calls["200"], end.Calls["501"]+end.Calls["http_429"]
	res.lateCalls, res.lateOK = sum(end)-sum(mid), end.Calls["200"]-mid.Calls["200"]
	res.lateLimit = end.Calls["501"] + end.Calls["http_429"] - mid.Calls["501"] - mid.Calls["http_429"]
	res.lateWall = end.LastSuccess.Sub(midAt)
	res.calling = end.LastSuccess.Sub(end.FirstSuccess)

	var lat []time.Duration
	for i := range o.quotaN {
		rec, err := statuses.Get(ctx, fmt.Sprintf("quota-%05d", i))
		if err != nil {
			return res, err
		}
		if rec.State != status.Succeeded {
			return res, fmt.Errorf("%s ended %s", rec.RequestID, rec.State)
		}
		lat = append(lat, rec.UpdatedAt.Sub(rec.CreatedAt))
	}
	slices.Sort(lat)
	res.p50, res.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	return res, nil
}
