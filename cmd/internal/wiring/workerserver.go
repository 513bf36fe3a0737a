package wiring

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/delivery"
	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/manifest"
	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/reports"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

// NewWorkerServer wires the handler's parts from cfg.
// With reg nil, nothing is measured. The returned check is the readiness
// of the worker's dependencies.
func NewWorkerServer(ctx context.Context, cfg Config, rdb redis.UniversalClient, log *slog.Logger, reg *prometheus.Registry) (*WorkerProcess, func(context.Context) error, error) {
	api, err := cropapi.NewClient(cfg.API)
	if err != nil {
		return nil, nil, EnvContext(err)
	}
	s3c, err := storage.NewS3Client(ctx, cfg.S3)
	if err != nil {
		return nil, nil, fmt.Errorf("s3 client: %w", err)
	}
	copier, err := results.New(s3c, cfg.Storage)
	if err != nil {
		return nil, nil, EnvContext(err)
	}
	st := records.NewStore(rdb, cfg.Status)
	inputs, err := storage.NewInputs(s3c, cfg.Inputs)
	if err != nil {
		return nil, nil, err
	}
	hcfg := worker.HandlerConfig{Limits: cfg.API.Limits, Destinations: cfg.Storage.Walls, Logger: log, Inputs: inputs, Now: cfg.Clock,
		TracerProvider: cfg.TracerProvider}
	if reg != nil {
		hcfg.Metrics = metrics.NewPipeline(reg, tenantLabel(cfg))
		registerBacklog(reg, cfg, NewBacklog(cfg, rdb))
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
		cfg.Server.Queues = map[string]int{cfg.Task.Queue: 4, delivery.DefaultQueue: 1}
	}
	if cfg.QuotaShared {
		qcfg := cfg.Quota
		qcfg.Logger = log
		limiter := quota.New(rdb, qcfg)
		hcfg.Quota = limiter
		if reg != nil {
			registerQuota(reg, limiter)
		}
	}
	var budgets *budget.Budgets
	if len(cfg.Budget.Caps) > 0 {
		budgets = budget.New(rdb, cfg.Budget)
		hcfg.Budget = budgets
	}
	lcfg := cfg.Lease
	lcfg.Logger = log
	leases := lease.New(rdb, lcfg)
	hcfg.Leases = worker.RedisLeases(leases)
	enq := backlog.TaskEnqueuer{Client: asynq.NewClientFromRedisClient(rdb), Options: cfg.Task, Records: st,
		Inspector: asynq.NewInspectorFromRedisClient(rdb)}
	var index *dedup.Index
	if cfg.Dedup.Scope != dedup.ScopeOff {
		dcfg := cfg.Dedup
		if dcfg.Mode != dedup.SourceURL {
			dcfg.Fetch = dedup.NewFetcher(dedup.FetchConfig{AllowPrivate: cfg.API.Limits.AllowPrivateHosts})
		}
		index = dedup.New(rdb, dcfg)
		hcfg.Dedup, hcfg.Reuse = worker.RedisDedup(index), copier
	}
	if index != nil && cfg.FreeWindow >= 0 {
		// Work that needs no call has a queue of its own, outside the
		// quota's window (package backlog's free.go).
		hcfg.FreeQueue, hcfg.Handoff = FreeQueue(cfg), enq
		// Free work drains its window in a moment: look for more soon
		// rather than after asynq's idle second.
		cfg.Server.TaskCheckInterval = 100 * time.Millisecond
	}
	// Served even with the free window off, so that tasks fed into it
	// before are run.
	if index != nil {
		queues := maps.Clone(cfg.Server.Queues)
		queues[FreeQueue(cfg)] = max(queues[cfg.Task.Queue], 1)
		cfg.Server.Queues = queues
	}
	h := worker.NewHandler(api, copier, st, hcfg)
	cfg.Server.Logger = log
	if reg != nil {
		metrics.RegisterRedisWritable(reg, func(ctx context.Context) error { return RedisWritable(ctx, cfg, rdb) })
	}
	ready := func(ctx context.Context) error {
		if err := RedisWritable(ctx, cfg, rdb); err != nil {
			return err
		}
		if err := copier.CheckBucket(ctx); err != nil {
			return fmt.Errorf("s3 bucket: %w", err)
		}
		return nil
	}
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
	// The feeder's leader also reads the manifests of manifest batches,
	// creating their requests through the producer's path.
	prod, err := NewProducer(ctx, cfg, rdb, log)
	if err != nil {
		return nil, nil, err
	}
	reader := manifest.NewReader(st, manifest.S3{Client: s3c}, prod, manifest.Config{Target: cfg.ManifestTarget, Logger: log})
	fcfg := backlog.FeederConfig{Queue: cfg.Task.Queue, Lead: cfg.FeedLead, Weights: cfg.TenantWeights,
		UrgentShare: cfg.UrgentShare, Demoter: urgentDemoter{records: st, metrics: hcfg.Metrics}, Budgets: feederBudgets(budgets),
		Rate: FleetRate(cfg, rdb), Rescue: rescue, Refiller: reader, Logger: log}
	if hcfg.FreeQueue != "" {
		free := enq
		free.Options.Queue = hcfg.FreeQueue
		fcfg.Classify = backlog.IndexClassifier{Records: st, Hint: index.HintKey, Known: index.Known}
		fcfg.FreeQueue, fcfg.FreeEnqueuer = hcfg.FreeQueue, free
		// Sized by the workers, not the quota: a few rounds of this
		// process's concurrency, topped up every tick.
		fcfg.FreeWindow = cfg.FreeWindow
		if fcfg.FreeWindow == 0 {
			fcfg.FreeWindow = 4 * cmp.Or(cfg.Server.Concurrency, worker.DefaultConcurrency)
		}
	}
	feeder := NewBacklog(cfg, rdb).NewFeeder(enq, fcfg)
	// The feeder's leader also writes the reports of batches with a report
	// destination once they are done, through the results' S3 client.
	rw := reports.New(st, reports.NewUploader(s3c, cfg.Storage.PartSize), reports.Config{Walls: cfg.Storage.Walls, Logger: log})
	return &WorkerProcess{Server: worker.NewServer(rdb, cfg.Server, h), feeder: feeder, handler: h, leases: leases, reports: rw, records: st, log: log, producer: prod}, ready, nil
}

// feederBudgets is budgets as the feeder takes them: none when nil (a nil
// *Budgets in the interface would not be nil).
func feederBudgets(b *budget.Budgets) backlog.Budgets {
	if b == nil {
		return nil
	}
	return b
}

// FreeQueue is the asynq queue of work that needs no paid call: the crop
// queue's name with "-free" (crops-free by default).
func FreeQueue(cfg Config) string { return cmp.Or(cfg.Task.Queue, tasks.DefaultQueue) + "-free" }

// urgentDemoter marks the record of an urgent request the feeder serves
// as normal (beyond its tenant's urgent share), and counts it.
type urgentDemoter struct {
	records *records.Store
	metrics *metrics.Pipeline
}

func (d urgentDemoter) Demote(ctx context.Context, tenant, requestID, lane string) error {
	ok, err := d.records.ServedAs(ctx, requestID, lane)
	if ok {
		d.metrics.UrgentDemoted(tenant)
	}
	return err
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

// WarnClockSkew logs when this worker's clock is off Redis's by more than
// a few seconds: result expiry does not trust local clocks, but asynq's
// recoverer does (its leases last 30 s).
func WarnClockSkew(ctx context.Context, clock func() time.Time, rdb redis.UniversalClient, log *slog.Logger) {
	d, err := clockSkew(ctx, clock, rdb)
	if err == nil && (d > 5*time.Second || d < -5*time.Second) {
		log.Warn("worker: this clock is off Redis's; asynq may hand running tasks to other workers", "skew", d.Round(time.Millisecond).String())
	}
}

// tenantLabel bounds the tenant label of metrics to the tenants configured
// with a weight (and "default"): series stay bounded whatever producers send.
func tenantLabel(cfg Config) metrics.TenantLabel {
	var known []string
	for t := range cfg.TenantWeights {
		known = append(known, t)
	}
	return metrics.KnownTenants(known...)
}

// WorkerProcess is what `cropq worker` runs: the asynq server and a feeder
// candidate (one feeder of the fleet holds the lease and feeds).
type WorkerProcess struct {
	*worker.Server
	feeder   *backlog.Feeder
	handler  *worker.Handler
	producer *producer.Producer // the manifest reader's
	leases   *lease.Leases
	reports  *reports.Writer
	records  *records.Store
	log      *slog.Logger
}

// Run serves until ctx ends, then drains; the feeder stops with ctx.
func (w *WorkerProcess) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); _ = w.feeder.Run(ctx) }()
	go func() {
		// Waiting records an earlier version gave a TTL keep their
		// request (once per deployment, by whichever worker gets there).
		defer wg.Done()
		n, done, err := w.records.PersistWaiting(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			w.log.WarnContext(ctx, "worker: persist the records of waiting requests", "err", err)
		case done:
			w.log.InfoContext(ctx, "worker: records of waiting requests no longer expire", "changed", n)
		}
	}()
	go func() { defer wg.Done(); w.reports.Run(ctx, w.feeder.Leader) }()
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
	return errors.Join(err, w.producer.Close())
}
