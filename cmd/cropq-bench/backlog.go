package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// benchBacklog runs the backlog benchmark (make bench-backlog): the fleet
// (pods × concurrency) against an emulator of quota Q, with the backlog's
// lanes and shares and, as the baselines, the same loads in one FIFO.
func benchBacklog(ctx context.Context, env *benchEnv, o options, progress io.Writer) ([]row, error) {
	bin, err := buildCropq(ctx, env)
	if err != nil {
		return nil, err
	}
	q := o.backlogQ
	say := func(s string) { fmt.Fprintln(progress, "cropq-bench: backlog: "+s+"…") }
	say("1. urgent under backfill, lanes")
	lanes, err := runUrgent(ctx, env, bin, o, false, progress)
	if err != nil {
		return nil, fmt.Errorf("urgent: %w", err)
	}
	say("1. urgent under backfill, one FIFO (baseline)")
	fifo, err := runUrgent(ctx, env, bin, o, true, progress)
	if err != nil {
		return nil, fmt.Errorf("urgent, fifo: %w", err)
	}
	say("2. shares, equal weights")
	equal, err := runShare(ctx, env, bin, o, nil, false)
	if err != nil {
		return nil, fmt.Errorf("shares: %w", err)
	}
	say("2. shares, a=3 b=1")
	weighted, err := runShare(ctx, env, bin, o, map[string]int{"tenant-a": 3, "tenant-b": 1}, false)
	if err != nil {
		return nil, fmt.Errorf("shares 3:1: %w", err)
	}
	say("2. shares, one FIFO (baseline)")
	fifoShare, err := runShare(ctx, env, bin, o, nil, true)
	if err != nil {
		return nil, fmt.Errorf("shares, fifo: %w", err)
	}
	flood, err := benchBacklogFlood(ctx, env, o, progress)
	if err != nil {
		return nil, err
	}
	say("5. Redis per queued request, enqueue throughput")
	mem, err := benchBacklogMemory(ctx, env, o)
	if err != nil {
		return nil, err
	}
	secs := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	bLimit := func(share float64) time.Duration {
		return time.Duration(1.2 * 300 / (share * q) * float64(time.Second))
	}
	rows := []row{
		{"backlog", fmt.Sprintf("1. urgent p99 enqueue→stored, 40 behind %d backfill, one FIFO (baseline)", o.backlogN), secs(fifo.p99), "1.00", "", ""},
		{"backlog", "   … priority lanes", secs(lanes.p99), fmt.Sprintf("%.3f", lanes.p99.Seconds()/fifo.p99.Seconds()), "≤ 5s", verdict(lanes.p99 <= 5*time.Second)},
		{"backlog", "2. tenant b's share while both have work, one FIFO (baseline)", fmt.Sprintf("%.2f", fifoShare.shareB), "", "", ""},
		{"backlog", "   … equal weights", fmt.Sprintf("%.2f", equal.shareB), "", "0.50 ± 0.05", verdict(math.Abs(equal.shareB-0.5) <= 0.05)},
		{"backlog", "   … a=3, b=1: a's share", fmt.Sprintf("%.2f", weighted.shareA), "", "0.75 ± 0.05", verdict(math.Abs(weighted.shareA-0.75) <= 0.05)},
		{"backlog", "   … b's 300 took (equal weights)", secs(equal.bTook), "", "≤ " + secs(bLimit(0.5)), verdict(equal.bTook <= bLimit(0.5))},
		{"backlog", "   … b's 300 took (a=3, b=1)", secs(weighted.bTook), "", "≤ " + secs(bLimit(0.25)), verdict(weighted.bTook <= bLimit(0.25))},
		{"backlog", "3. goodput over the whole lanes run (200s/s ÷ Q)", fmt.Sprintf("%.3f", lanes.goodput), "", "≥ 0.97", verdict(lanes.goodput >= 0.97)},
		{"backlog", "   501/429 share of calls", fmt.Sprintf("%.2f %% (%d calls)", 100*lanes.limitShare, lanes.calls), "", "≤ 1 %", verdict(lanes.limitShare <= 0.01)},
		{"backlog", "   paid calls per stored image", fmt.Sprintf("%.3f (%d / %d)", lanes.paidPerStored, lanes.paid, lanes.stored), "", "= 1.000", verdict(lanes.paid == lanes.stored)},
		{"backlog", "4. ETA error at 25 % done, b's batch (equal weights)", fmt.Sprintf("%.1f %% (%s said, %s took)", 100*equal.etaErr, secs(equal.eta), secs(equal.actual)), "", "≤ 15 %", verdict(equal.etaErr <= 0.15)},
		{"backlog", "   … (a=3, b=1)", fmt.Sprintf("%.1f %% (%s said, %s took)", 100*weighted.etaErr, secs(weighted.eta), secs(weighted.actual)), "", "≤ 15 %", verdict(weighted.etaErr <= 0.15)},
	}
	return slices.Concat(rows, mem, flood), nil
}

// typicalRequest is a catalogue request as the issue sizes it: an id and a
// URL of the usual length, 800×800, in the backfill lane.
func typicalRequest(i int) tasks.Request {
	sku := fmt.Sprintf("%07d", i)
	return tasks.Request{RequestID: "sku-" + sku + "-main", ImageURL: "https://cdn.shop-example.com/catalog/images/" + sku + ".jpg",
		Params: tasks.Params{TargetWidth: 800, TargetHeight: 800, Priority: tasks.PriorityBackfill}}
}

// usedMemory is Redis's used_memory.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	v, err := rdb.InfoMap(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v["Memory"]["used_memory"], 10, 64)
}

// backlogMemory queues n typical requests through enqueue into a flushed
// Redis and returns used_memory growth per request.
func backlogMemory(ctx context.Context, rdb *redis.Client, n int, enqueue func(context.Context, []tasks.Request) error) (float64, error) {
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return 0, err
	}
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return 0, err
	}
	const chunk = 1000
	for i := 0; i < n; i += chunk {
		var reqs []tasks.Request
		for j := i; j < min(i+chunk, n); j++ {
			reqs = append(reqs, typicalRequest(j))
		}
		if err := enqueue(ctx, reqs); err != nil {
			return 0, err
		}
	}
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n), nil
}

// benchBacklogMemory is the backlog benchmark's fifth part: Redis bytes per
// queued request and enqueue throughput, with the backlog and, as the
// baseline, straight into asynq as before it.
func benchBacklogMemory(ctx context.Context, env *benchEnv, o options) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 4 * o.enqueueGoroutines})
	defer rdb.Close()
	direct := producer.New(rdb, producer.Config{Concurrency: 1})
	defer direct.Close()
	withBacklog := producer.New(rdb, producer.Config{Concurrency: 1, Backlog: true})
	defer withBacklog.Close()
	via := func(p *producer.Producer) func(context.Context, []tasks.Request) error {
		return func(ctx context.Context, reqs []tasks.Request) error { return checkResults(p.EnqueueBatch(ctx, reqs)) }
	}
	n := o.backlogMemN
	before, err := backlogMemory(ctx, rdb, n, via(direct))
	if err != nil {
		return nil, fmt.Errorf("memory, direct: %w", err)
	}
	after, err := backlogMemory(ctx, rdb, n, via(withBacklog))
	if err != nil {
		return nil, fmt.Errorf("memory, backlog: %w", err)
	}

	client := asynq.NewClientFromRedisClient(rdb)
	defer client.Close()
	g := o.enqueueGoroutines
	raw, err := timeEnqueue(ctx, rdb, o.enqueueN, g, rawEnqueue(client), asynqPending(rdb))
	if err != nil {
		return nil, fmt.Errorf("raw asynq: %w", err)
	}
	bl := backlog.New(rdb, backlog.Config{})
	lib, err := timeEnqueue(ctx, rdb, o.enqueueN, g, via(withBacklog), bl.Size)
	if err != nil {
		return nil, fmt.Errorf("library: %w", err)
	}
	_ = rdb.FlushDB(ctx).Err()
	ratio := lib / raw
	return []row{
		{"backlog", fmt.Sprintf("Redis per queued request, %d URL requests, asynq task + JSON record (baseline)", n), fmt.Sprintf("%.0f B", before), "1.00", "", ""},
		{"backlog", "  … in the backlog (record + list entry, no task until fed)", fmt.Sprintf("%.0f B", after), fmt.Sprintf("%.2f", after/before), "≤ 600 B", verdict(after <= 600)},
		{"backlog", fmt.Sprintf("enqueue: raw asynq Enqueue, %d tasks, %d goroutines (baseline)", o.enqueueN, g), fmt.Sprintf("%.0f req/s", raw), "1.00", "", ""},
		{"backlog", "  … producer library into the backlog, batches of 500", fmt.Sprintf("%.0f req/s", lib), fmt.Sprintf("%.2f", ratio), "≥ 0.80", verdict(ratio >= 0.8)},
	}, nil
}

// fleet is one run of worker processes against an in-process emulator.
type fleet struct {
	rdb    *redis.Client
	emu    *cropapitest.Server
	images string
	prod   *producer.Producer
	stop   func() error
	s3     *s3.Client // the fleet's bucket, and a client of it
	bucket string
}

// startFleet starts pods worker processes with extra environment against a
// fresh Redis database, an emulator of quota q (latency 200 ± 100 ms) and a
// producer with the backlog.
func startFleet(ctx context.Context, env *benchEnv, bin string, o options, weights map[string]int, extra ...string) (*fleet, error) {
	return launchFleet(ctx, env, bin, fleetSpec{q: o.backlogQ, pods: o.backlogPods, concurrency: o.backlogConcurrency, weights: weights, extra: extra})
}

// fleetSpec is what a fleet run is made of.
type fleetSpec struct {
	q                 float64 // the emulator's quota and CROPQ_QUOTA_RATE
	pods, concurrency int
	weights           map[string]int
	// images serves the source images (default: one sample at every path).
	images http.Handler
	// cropCache is the emulator's memo of crops (default 4).
	cropCache int
	bucket    string // default bench-backlog-<time>
	extra     []string
}

// launchFleet starts spec.pods worker processes (the fleet's environment,
// then spec.extra) against a fresh Redis database, an emulator of quota
// spec.q (latency 200 ± 100 ms), an image server and a producer with the
// backlog.
func launchFleet(ctx context.Context, env *benchEnv, bin string, spec fleetSpec) (*fleet, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr()})
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return nil, err
	}
	if spec.images == nil {
		img, err := sampleHandler("ball-offcentre.jpg")
		if err != nil {
			return nil, err
		}
		spec.images = img
	}
	if spec.cropCache <= 0 {
		spec.cropCache = 4
	}
	emu, err := cropapitest.New(cropapitest.Config{AppKey: benchKey, AppSecret: benchSecret, Rate: spec.q, CropCache: spec.cropCache,
		Faults: cropapitest.Faults{Latency: 200 * time.Millisecond, LatencyJitter: 100 * time.Millisecond}})
	if err != nil {
		return nil, err
	}
	api := httptest.NewServer(emu)
	images := httptest.NewServer(spec.images)
	bucket := spec.bucket
	if bucket == "" {
		bucket = fmt.Sprintf("bench-backlog-%d", time.Now().UnixNano())
	}
	s3c, err := env.newBucket(ctx, bucket)
	if err != nil {
		return nil, err
	}
	var ws []string
	for t, w := range spec.weights {
		ws = append(ws, fmt.Sprintf("%s=%d", t, w))
	}
	fleetEnv := env.workerEnv(api.URL, bucket, append([]string{"CROPQ_QUOTA_RATE=" + strconv.FormatFloat(spec.q, 'f', -1, 64),
		"CROPQ_MAX_RETRY=25", "CROPQ_TENANT_WEIGHTS=" + strings.Join(ws, ",")}, spec.extra...)...)
	var logs bytes.Buffer
	procs, err := env.startWorkers(bin, spec.pods, spec.concurrency, fleetEnv, &syncWriter{w: &logs})
	f := &fleet{rdb: rdb, emu: emu, images: images.URL, s3: s3c, bucket: bucket}
	f.stop = func() error {
		err := stopWorkers(ctx, procs, &logs)
		api.Close()
		images.Close()
		if f.prod != nil {
			_ = f.prod.Close()
		}
		return errors.Join(err, rdb.Close())
	}
	if err != nil {
		_ = f.stop()
		return nil, err
	}
	q := spec.q
	f.prod = producer.New(rdb, producer.Config{Backlog: true, Weights: spec.weights,
		Task: tasks.Options{MaxRetry: 25, Retention: time.Hour, Limits: cropapi.Limits{AllowPrivateHosts: true}},
		Rate: func(context.Context) (float64, error) { return q, nil }})
	return f, nil
}

// submit enqueues n requests named prefix-i of a tenant, lane and batch.
func (f *fleet) submit(ctx context.Context, prefix string, n int, tenant, priority, batch string) ([]string, error) {
	var ids []string
	for i := 0; i < n; i += 500 {
		var reqs []tasks.Request
		for j := i; j < min(i+500, n); j++ {
			id := fmt.Sprintf("%s-%05d", prefix, j)
			ids = append(ids, id)
			reqs = append(reqs, tasks.Request{RequestID: id, ImageURL: f.images + "/" + id + ".jpg", Params: tasks.Params{TargetWidth: 800,
				TargetHeight: 800, Tenant: tenant, Priority: priority, BatchID: batch}})
		}
		if err := checkResults(f.prod.EnqueueBatch(ctx, reqs)); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// records reads the records of ids.
func (f *fleet) records(ctx context.Context, ids []string) ([]status.Record, error) {
	st := records.NewStore(f.rdb, status.Config{})
	out := make([]status.Record, 0, len(ids))
	for _, id := range ids {
		rec, err := st.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// await polls until every id is terminal (or timeout), calling each on
// every poll.
func (f *fleet) await(ctx context.Context, ids []string, timeout time.Duration, each func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		recs, err := f.records(ctx, ids)
		if err != nil {
			return err
		}
		done := true
		for _, r := range recs {
			if !r.State.Terminal() {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		if each != nil {
			if err := each(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// p99 of done−created over the succeeded records.
func latencyP99(recs []status.Record) time.Duration {
	var lat []time.Duration
	for _, r := range recs {
		if r.State == status.Succeeded {
			lat = append(lat, r.UpdatedAt.Sub(r.CreatedAt))
		}
	}
	if len(lat) == 0 {
		return -1
	}
	slices.Sort(lat)
	return lat[min(len(lat)-1, len(lat)*99/100)]
}

// urgentRun is scenario 1 (and 3): a backfill backlog, then urgent
// requests; fifo puts them all in one lane (the baseline).
type urgentRun struct {
	p99                  time.Duration
	goodput, limitShare  float64
	paidPerStored        float64
	stored, paid, calls  int64
	backfillDoneAtUrgent int
}

func runUrgent(ctx context.Context, env *benchEnv, bin string, o options, fifo bool, progress io.Writer) (res urgentRun, err error) {
	f, err := startFleet(ctx, env, bin, o, nil)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, f.stop()) }()
	back, err := f.submit(ctx, "bf", o.backlogN, "", tasks.PriorityBackfill, "")
	if err != nil {
		return res, err
	}
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(30 * time.Second):
	}
	lane := tasks.PriorityUrgent
	if fifo {
		lane = tasks.PriorityBackfill
	}
	var urgent []string
	for i := range 40 { // 40 within 4 s
		ids, err := f.submit(ctx, fmt.Sprintf("ur%02d", i), 1, "", lane, "")
		if err != nil {
			return res, err
		}
		urgent = append(urgent, ids...)
		time.Sleep(100 * time.Millisecond) // arrivals spread over 4 s, as the scenario says
	}
	fmt.Fprintf(progress, "cropq-bench: backlog: urgent submitted (fifo %v)…\n", fifo)
	if err := f.await(ctx, urgent, 15*time.Minute, nil); err != nil {
		return res, fmt.Errorf("urgent: %w", err)
	}
	ur, err := f.records(ctx, urgent)
	if err != nil {
		return res, err
	}
	res.p99 = latencyP99(ur)
	bf, err := f.records(ctx, back)
	if err != nil {
		return res, err
	}
	for _, r := range bf {
		if r.State.Terminal() {
			res.backfillDoneAtUrgent++
		}
	}
	if fifo {
		return res, nil // the baseline is only about the urgent requests
	}
	if err := f.await(ctx, back, 15*time.Minute, nil); err != nil {
		return res, fmt.Errorf("backfill: %w", err)
	}
	st := f.emu.Stats()
	for _, n := range st.Calls {
		res.calls += n
	}
	res.paid = st.Calls["200"]
	res.limitShare = float64(st.Calls["501"]+st.Calls["http_429"]) / float64(max(res.calls, 1))
	res.goodput = float64(st.Calls["200"]-1) / st.LastSuccess.Sub(st.FirstSuccess).Seconds() / o.backlogQ
	all, err := f.records(ctx, append(back, urgent...))
	if err != nil {
		return res, err
	}
	for _, r := range all {
		if r.State == status.Succeeded {
			res.stored++
		}
	}
	res.paidPerStored = float64(res.paid) / float64(max(res.stored, 1))
	return res, nil
}

// shareRun is scenario 2 (and 4): tenant a's backlog, then tenant b's
// batch; the share of b while both have work, how long b took, and the
// ETA b's batch reported at 25 % done against what it took.
type shareRun struct {
	shareA, shareB float64
	bTook          time.Duration
	etaErr         float64
	eta, actual    time.Duration
}

func runShare(ctx context.Context, env *benchEnv, bin string, o options, weights map[string]int, fifo bool) (res shareRun, err error) {
	f, err := startFleet(ctx, env, bin, o, weights)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, f.stop()) }()
	tenantB := "tenant-b"
	if fifo {
		tenantB = "tenant-a" // one tenant: one FIFO
	}
	aIDs, err := f.submit(ctx, "ta", o.backlogN, "tenant-a", tasks.PriorityNormal, "")
	if err != nil {
		return res, err
	}
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(30 * time.Second):
	}
	bStart := time.Now()
	bIDs, err := f.submit(ctx, "tb", 300, tenantB, tasks.PriorityNormal, "batch-b")
	if err != nil {
		return res, err
	}
	var etaAt time.Time
	timeout := 10 * time.Minute
	if fifo {
		timeout = 2 * time.Minute // the baseline's b waits for all of a: its share over 2 minutes is the point
	}
	err = f.await(ctx, bIDs, timeout, func() error {
		if !etaAt.IsZero() {
			return nil
		}
		bi, err := f.prod.Batch(ctx, tenantB, "batch-b")
		if err != nil {
			return err
		}
		if bi.Total-bi.Remaining >= bi.Total/4 {
			res.eta, etaAt = bi.ETA, time.Now()
		}
		return nil
	})
	if err != nil && !fifo {
		return res, fmt.Errorf("tenant b: %w", err)
	}
	end := time.Now()
	res.bTook = end.Sub(bStart)
	if !etaAt.IsZero() {
		res.actual = end.Sub(etaAt)
		res.etaErr = math.Abs(res.eta.Seconds()-res.actual.Seconds()) / res.actual.Seconds()
	}
	// Shares of the paid calls while both had work: between b's first and
	// last stored result (a's backlog lasts throughout), so the window the
	// feeder had already filled with a's work when b arrived is left out.
	bRecs, err := f.records(ctx, bIDs)
	if err != nil {
		return res, err
	}
	var from, to time.Time
	for _, r := range bRecs {
		if r.State != status.Succeeded {
			continue
		}
		if from.IsZero() || r.UpdatedAt.Before(from) {
			from = r.UpdatedAt
		}
		if r.UpdatedAt.After(to) {
			to = r.UpdatedAt
		}
	}
	if fifo {
		from, to = bStart, end // b may not have started: its share is the point
	}
	count := func(ids []string) (int, error) {
		recs, err := f.records(ctx, ids)
		n := 0
		for _, r := range recs {
			if r.State == status.Succeeded && !r.UpdatedAt.Before(from) && !r.UpdatedAt.After(to) {
				n++
			}
		}
		return n, err
	}
	nA, err := count(aIDs)
	if err != nil {
		return res, err
	}
	nB, err := count(bIDs)
	if err != nil {
		return res, err
	}
	res.shareA = float64(nA) / float64(max(nA+nB, 1))
	res.shareB = float64(nB) / float64(max(nA+nB, 1))
	return res, nil
}

// floodRun is scenario 6: tenant b's normal requests, alone or under
// tenant a's flood of urgent ones.
type floodRun struct {
	took    time.Duration // b's submission to its last stored result
	aBefore int           // a's results stored before b's last
	demoted int           // a's records served as normal
}

// Scenario 6's load, as issue 21 measured it.
const (
	floodA = 500 // a's urgent requests
	floodB = 50  // b's normal requests
)

// runFlood starts a fleet with CROPQ_URGENT_SHARE=share, warms it with one
// request, then queues b's floodB normal requests: alone (flood false), in
// one call behind a's floodA urgent ones (ahead 0: the feeder sees both at
// once), or ahead after a's flood (the fed window already full of a's
// work).
func runFlood(ctx context.Context, env *benchEnv, bin string, o options, share string, flood bool, ahead time.Duration) (res floodRun, err error) {
	f, err := startFleet(ctx, env, bin, o, nil, "CROPQ_URGENT_SHARE="+share)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, f.stop()) }()
	warm, err := f.submit(ctx, "warm", 1, "tenant-b", tasks.PriorityNormal, "")
	if err != nil {
		return res, err
	}
	if err := f.await(ctx, warm, 2*time.Minute, nil); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	reqs := func(prefix, tenant, priority string, n int) ([]tasks.Request, []string) {
		var rs []tasks.Request
		var ids []string
		for i := range n {
			id := fmt.Sprintf("%s-%05d", prefix, i)
			ids = append(ids, id)
			rs = append(rs, tasks.Request{RequestID: id, ImageURL: f.images + "/" + id + ".jpg", Params: tasks.Params{TargetWidth: 800,
				TargetHeight: 800, Tenant: tenant, Priority: priority}})
		}
		return rs, ids
	}
	aReqs, aIDs := reqs("fa", "tenant-a", tasks.PriorityUrgent, floodA)
	bReqs, bIDs := reqs("fb", "tenant-b", tasks.PriorityNormal, floodB)
	var batch []tasks.Request
	switch {
	case flood && ahead > 0:
		if err := checkResults(f.prod.EnqueueBatch(ctx, aReqs)); err != nil {
			return res, err
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(ahead):
		}
	case flood:
		batch = aReqs
	default:
		aIDs = nil
	}
	start := time.Now()
	if err := checkResults(f.prod.EnqueueBatch(ctx, append(batch, bReqs...))); err != nil {
		return res, err
	}
	if err := f.await(ctx, bIDs, 5*time.Minute, nil); err != nil {
		return res, fmt.Errorf("tenant b: %w", err)
	}
	bRecs, err := f.records(ctx, bIDs)
	if err != nil {
		return res, err
	}
	var last time.Time
	for _, r := range bRecs {
		if r.UpdatedAt.After(last) {
			last = r.UpdatedAt
		}
	}
	res.took = last.Sub(start)
	aRecs, err := f.records(ctx, aIDs)
	if err != nil {
		return res, err
	}
	for _, r := range aRecs {
		if r.State == status.Succeeded && !r.UpdatedAt.After(last) {
			res.aBefore++
		}
		if r.ServedAs != "" {
			res.demoted++
		}
	}
	return res, nil
}

// benchBacklogFlood is the backlog benchmark's sixth part (alone:
// cropq-bench backlog-flood, about 2 minutes): how much tenant a's flood of
// urgent requests delays tenant b's normal ones, against b alone, without
// the urgent budget (as before it) and with it.
func benchBacklogFlood(ctx context.Context, env *benchEnv, o options, progress io.Writer) ([]row, error) {
	bin, err := buildCropq(ctx, env)
	if err != nil {
		return nil, err
	}
	say := func(s string) { fmt.Fprintln(progress, "cropq-bench: backlog: 6. "+s+"…") }
	share := strconv.FormatFloat(backlog.DefaultUrgentShare, 'g', -1, 64)
	say("b alone")
	alone, err := runFlood(ctx, env, bin, o, share, false, 0)
	if err != nil {
		return nil, fmt.Errorf("flood, alone: %w", err)
	}
	say("a's urgent flood, no budget")
	free, err := runFlood(ctx, env, bin, o, "1", true, 0)
	if err != nil {
		return nil, fmt.Errorf("flood, no budget: %w", err)
	}
	say("a's urgent flood, budget")
	budget, err := runFlood(ctx, env, bin, o, share, true, 0)
	if err != nil {
		return nil, fmt.Errorf("flood, budget: %w", err)
	}
	const ahead = 5 * time.Second
	say("a's urgent flood 5 s ahead, budget")
	late, err := runFlood(ctx, env, bin, o, share, true, ahead)
	if err != nil {
		return nil, fmt.Errorf("flood ahead, budget: %w", err)
	}
	secs := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	ratio := func(r floodRun) float64 { return r.took.Seconds() / alone.took.Seconds() }
	value := func(r floodRun) string {
		return fmt.Sprintf("%s (a: %d stored first, %d as normal)", secs(r.took), r.aBefore, r.demoted)
	}
	// A flood already under way has filled the fed window (lead × Q) with
	// a's work, which b waits behind as behind any tenant's backlog.
	lead := backlog.DefaultLead
	lateLimit := 2*alone.took + lead
	return []row{
		{"backlog", fmt.Sprintf("6. tenant b's %d normal, enqueue→last stored, alone (baseline)", floodB), secs(alone.took), "1.00", "", ""},
		{"backlog", fmt.Sprintf("   … queued behind a's %d urgent, no urgent budget (CROPQ_URGENT_SHARE=1, as before)", floodA), value(free), fmt.Sprintf("%.2f", ratio(free)), "", ""},
		{"backlog", fmt.Sprintf("   … queued behind a's %d urgent, urgent budget %s", floodA, share), value(budget), fmt.Sprintf("%.2f", ratio(budget)), "≤ 2.00", verdict(ratio(budget) <= 2)},
		{"backlog", fmt.Sprintf("   … a's flood %s ahead, urgent budget %s", ahead, share), value(late), fmt.Sprintf("%.2f", ratio(late)),
			"≤ 2 × alone + lead (" + secs(lateLimit) + ")", verdict(late.took <= lateLimit)},
	}, nil
}
