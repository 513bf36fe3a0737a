package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/backlog"
	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/dedup"
	"github.com/cropq/cropq/lease"
	"github.com/cropq/cropq/metrics"
	"github.com/cropq/cropq/quota"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/webhook"
	"github.com/cropq/cropq/worker"
)

// parseFlags parses args into fs, printing errors and help to stderr.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func runWorker(ctx context.Context, env Env, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq worker", flag.ContinueOnError)
	concurrency := fs.Int("concurrency", 0, "tasks run at once (default CROPQ_CONCURRENCY)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq worker [--concurrency N]\n\nProcesses crop tasks until SIGTERM/SIGINT, then drains for CROPQ_SHUTDOWN_TIMEOUT.\nConfiguration: see 'cropq env'.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	if *concurrency > 0 {
		cfg.Server.Concurrency = *concurrency
	}
	log := newLogger(env, stderr)
	logConfig(log, cfg)

	rdb, err := openRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	reg := metrics.NewRegistry()
	warnClockSkew(ctx, cfg.Clock, rdb, log)
	srv, ready, err := newWorkerServer(ctx, cfg, rdb, log, reg)
	if err != nil {
		return err
	}
	// Health and metrics stay up while draining (readiness false), and stop
	// after the last task.
	stopHTTP, err := serveOps(cfg.WorkerAddr, metrics.Health{Registry: reg, Ready: ready, Draining: srv.Draining}.Handler(), log)
	if err != nil {
		return err
	}
	defer stopHTTP()
	return srv.Run(ctx)
}

// serveOps serves the health/metrics handler on addr until the returned
// function is called.
func serveOps(addr string, h http.Handler, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health/metrics listener: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health/metrics server", "err", err)
		}
	}()
	log.Info("health and metrics", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// newWorkerServer wires the handler's parts from cfg.
// With reg nil, nothing is measured. The returned check is the readiness
// of the worker's dependencies.
func newWorkerServer(ctx context.Context, cfg config, rdb redis.UniversalClient, log *slog.Logger, reg *prometheus.Registry) (*workerProcess, func(context.Context) error, error) {
	api, err := cropapi.NewClient(cfg.API)
	if err != nil {
		return nil, nil, err
	}
	s3c, err := storage.NewS3Client(ctx, cfg.S3)
	if err != nil {
		return nil, nil, fmt.Errorf("s3 client: %w", err)
	}
	copier, err := storage.New(s3c, cfg.Storage)
	if err != nil {
		return nil, nil, err
	}
	st := status.NewStore(rdb, cfg.Status)
	inputs, err := storage.NewInputs(s3c, cfg.Inputs)
	if err != nil {
		return nil, nil, err
	}
	hcfg := worker.HandlerConfig{Limits: cfg.API.Limits, Logger: log, Inputs: inputs, Now: cfg.Clock}
	if reg != nil {
		hcfg.Metrics = metrics.NewPipeline(reg, tenantLabel(cfg))
		bl := newBacklog(cfg, rdb)
		metrics.RegisterBacklog(reg, func(ctx context.Context) ([]metrics.BacklogStat, error) {
			stats, err := bl.Stats(ctx)
			out := make([]metrics.BacklogStat, len(stats))
			for i, st := range stats {
				out[i] = metrics.BacklogStat{Lane: st.Lane, Tenant: st.Tenant, Len: st.Len, Oldest: st.Oldest}
			}
			return out, err
		}, tenantLabel(cfg))
		metrics.RegisterClockSkew(reg, func(ctx context.Context) (time.Duration, error) { return clockSkew(ctx, cfg.Clock, rdb) })
		metrics.RegisterQueues(reg, asynq.NewInspectorFromRedisClient(rdb))
	}
	handlers, err := webhookHandlers(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	if handlers != nil {
		hcfg.Notifier = webhookNotifier{client: asynq.NewClientFromRedisClient(rdb)}
		cfg.Server.Handlers = handlers
		// Crops first; callbacks are small and wait little.
		cfg.Server.Queues = map[string]int{cfg.Task.Queue: 4, webhook.DefaultQueue: 1}
	}
	if cfg.QuotaShared {
		qcfg := cfg.Quota
		qcfg.Logger = log
		limiter := quota.New(rdb, qcfg)
		hcfg.Quota = limiter
		if reg != nil {
			metrics.RegisterQuota(reg, func(ctx context.Context) (float64, float64, error) {
				st, err := limiter.State(ctx)
				return st.Effective, st.Ceiling, err
			})
		}
	}
	lcfg := cfg.Lease
	lcfg.Logger = log
	leases := lease.New(rdb, lcfg)
	hcfg.Leases = worker.RedisLeases(leases)
	if cfg.Dedup.Scope != dedup.ScopeOff {
		dcfg := cfg.Dedup
		if cfg.DedupFetch {
			dcfg.Fetch = dedup.NewFetcher(dedup.FetchConfig{AllowPrivate: cfg.API.Limits.AllowPrivateHosts})
		}
		hcfg.Dedup, hcfg.Reuse = worker.RedisDedup(dedup.New(rdb, dcfg)), copier
	}
	h := worker.NewHandler(api, copier, st, hcfg)
	cfg.Server.Logger = log
	if reg != nil {
		metrics.RegisterRedisWritable(reg, func(ctx context.Context) error { return redisWritable(ctx, cfg, rdb) })
	}
	ready := func(ctx context.Context) error {
		if err := redisWritable(ctx, cfg, rdb); err != nil {
			return err
		}
		if err := copier.CheckBucket(ctx); err != nil {
			return fmt.Errorf("s3 bucket: %w", err)
		}
		return nil
	}
	enq := backlog.TaskEnqueuer{Client: asynq.NewClientFromRedisClient(rdb), Options: cfg.Task, Records: st,
		Inspector: asynq.NewInspectorFromRedisClient(rdb)}
	// The feeder's leader is also the fleet's rescuer of crops whose worker
	// stopped renewing their leases.
	rescue := func(ctx context.Context) error {
		hs, err := leases.Rescue(ctx, enq, 200)
		for _, h := range hs {
			log.WarnContext(ctx, "rescue: a worker stopped renewing its lease; the crop runs again", "task_id", h.TaskID, "attempt", h.Attempt)
		}
		hcfg.Metrics.Rescued(len(hs))
		return err
	}
	feeder := newBacklog(cfg, rdb).NewFeeder(enq, backlog.FeederConfig{Queue: cfg.Task.Queue, Lead: cfg.FeedLead, Weights: cfg.TenantWeights,
		Rate: fleetRate(cfg, rdb), Rescue: rescue, Logger: log})
	return &workerProcess{Server: worker.NewServer(rdb, cfg.Server, h), feeder: feeder, handler: h, leases: leases}, ready, nil
}

// clockSkew is this process's clock less Redis's TIME, halving the round
// trip.
func clockSkew(ctx context.Context, clock func() time.Time, rdb redis.UniversalClient) (time.Duration, error) {
	before := clock()
	t, err := rdb.Time(ctx).Result()
	if err != nil {
		return 0, err
	}
	rtt := clock().Sub(before)
	return before.Add(rtt / 2).Sub(t), nil
}

// warnClockSkew logs when this worker's clock is off Redis's by more than
// a few seconds: result expiry does not trust local clocks, but asynq's
// recoverer does (its leases last 30 s).
func warnClockSkew(ctx context.Context, clock func() time.Time, rdb redis.UniversalClient, log *slog.Logger) {
	d, err := clockSkew(ctx, clock, rdb)
	if err == nil && (d > 5*time.Second || d < -5*time.Second) {
		log.Warn("worker: this clock is off Redis's; asynq may hand running tasks to other workers", "skew", d.Round(time.Millisecond).String())
	}
}

// tenantLabel bounds the tenant label of metrics to the tenants configured
// with a weight (and "default"): series stay bounded whatever producers send.
func tenantLabel(cfg config) metrics.TenantLabel {
	var known []string
	for t := range cfg.TenantWeights {
		known = append(known, t)
	}
	return metrics.KnownTenants(known...)
}

// workerProcess is what `cropq worker` runs: the asynq server and a feeder
// candidate (one feeder of the fleet holds the lease and feeds).
type workerProcess struct {
	*worker.Server
	feeder  *backlog.Feeder
	handler *worker.Handler
	leases  *lease.Leases
}

// Run serves until ctx ends, then drains; the feeder stops with ctx.
func (w *workerProcess) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = w.feeder.Run(ctx) }()
	// Leases are renewed until the server has drained: crops finishing
	// during the shutdown are still this worker's.
	lctx, stopLeases := context.WithCancel(context.WithoutCancel(ctx))
	go func() { defer wg.Done(); w.leases.Run(lctx) }()
	go func() {
		// Paid answers Redis refused to checkpoint are recorded as soon as
		// it takes writes again.
		defer wg.Done()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.handler.FlushKept(ctx)
			}
		}
	}()
	err := w.Server.Run(ctx)
	stopLeases()
	wg.Wait()
	return err
}
