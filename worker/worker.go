// Package worker runs cropq's worker inside a Go program, as asynq.Server
// runs asynq's: it takes crop tasks from Redis, calls the Image Cropping
// API once per request, copies each result into S3 and records the outcome,
// until its context ends, then drains.
//
// A Worker is also a candidate for the fleet's feeder: one worker of the
// fleet at a time (it holds the feeder's leadership lock) moves waiting
// requests from the backlog into asynq by priority lane, tenant share and budget, reads the manifests of
// manifest batches, writes the reports of finished batches and hands the
// crops of workers that died back to the queue. Every worker renews a short
// lease on each crop it runs, so that a crop is never paid for twice.
//
// Every Config field but Redis, API's keys and Bucket may be left zero for
// the default of `cropq worker`, which sets the same fields from its
// CROPQ_* variables (docs/configuration.md):
//
//	w, err := worker.New(ctx, worker.Config{
//		Redis:  rdb,
//		API:    cropapi.Config{AppKey: key, AppSecret: secret},
//		Bucket: "crops",
//		Logger: slog.Default(),
//	})
//	if err != nil { … }
//	err = w.Run(ctx) // until ctx ends, then drains
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/delivery"
	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/manifest"
	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/internal/namespace"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/reports"
	"github.com/cropq/cropq/internal/results"
	handling "github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

// Config configures a Worker. Zero values take defaults; Redis, API.AppKey,
// API.AppSecret and Bucket are required.
type Config struct {
	// Redis holds the queues, the records and the shared quota; the caller
	// owns it and closes it after Run returns.
	Redis redis.UniversalClient
	// API is the Image Cropping API: its keys, endpoint, timeout and input
	// rules (API.Limits, also those of the requests the manifest reader
	// creates).
	API cropapi.Config
	// Task are the options of crop tasks: the queue this worker reads
	// (default "crops"), retries, the attempt timeout and retention. Their
	// Limits, CallbackAllow and Destinations are the worker's: API.Limits,
	// WebhookAllow and the walls of Bucket, TenantBuckets and Inputs.
	Task tasks.Options
	// Status is where the records live: the prefix of every key of cropq's
	// own (default "cropq:") and how long a finished request's record lives
	// (default 7 days).
	Status status.Config

	// S3 reaches the bucket results are copied into, Bucket (required).
	// KeyTemplate names a result's key (default
	// "crops/{requestId}/{width}x{height}.{ext}"); TenantBuckets are the
	// buckets each tenant may name besides Bucket (where it writes under
	// tenants/TENANT/ only). Inputs is where claim-checked source images are
	// (its Bucket defaults to Bucket).
	S3            storage.S3Config
	Bucket        string
	KeyTemplate   string
	TenantBuckets map[string][]string
	Inputs        storage.InputsConfig
	// MaxResultBytes bounds a result's download (default 64 MiB);
	// MultipartUploads bounds the results over 5 MiB copied at once
	// (default 1, each about 15 MiB of memory). Result URLs may come only
	// from ResultHosts (default the vendor's "*.aliyuncs.com"), over https
	// unless ResultAllowHTTP.
	MaxResultBytes   int64
	MultipartUploads int
	ResultHosts      []string
	ResultAllowHTTP  bool

	// Concurrency is the number of crops run at once (default 10).
	// ShutdownTimeout is how long running crops get to finish once ctx
	// ends (default 25s) before they go back to the queue.
	// DelayedTaskCheckInterval is how often due retries are moved back to
	// pending (default 5s). Retry delays grow exponentially, with full
	// jitter, from at most RetryBase (default 2s) to RetryCap (default
	// 5m).
	Concurrency              int
	ShutdownTimeout          time.Duration
	DelayedTaskCheckInterval time.Duration
	RetryBase, RetryCap      time.Duration

	// The fleet shares the account's API calls through Redis: at most
	// QuotaRate per second (default 5), QuotaBurst at once (default 2),
	// waiting in place at most QuotaMaxWait for a call (default 5s).
	// Unless FixedQuotaRate, the rate is lowered on rate-limit answers and
	// raised back while calls succeed, down to QuotaMinRate at most
	// (default QuotaRate/20). UnsharedQuota leaves each worker to back off
	// on rate-limit answers alone.
	QuotaRate      float64
	QuotaBurst     int
	QuotaMaxWait   time.Duration
	QuotaMinRate   float64
	FixedQuotaRate bool
	UnsharedQuota  bool

	// TenantWeights are the tenants' shares of the quota within a priority
	// lane (1–1000; a tenant not listed weighs 1). TenantBudgets cap each
	// tenant's paid calls per UTC period, as "calls/period" with a period
	// of hour, day or month ("50000/day"); work over budget waits for the
	// next period.
	TenantWeights map[string]int
	TenantBudgets map[string]string
	// FeedLead is how many seconds of calls the feeder keeps in asynq ahead
	// of the workers (default 2s). UrgentShare is the part of the quota each
	// tenant's urgent requests may take, in (0, 1] (default 0.25).
	// FreeWindow is how many tasks whose result is already stored the
	// feeder keeps in the free queue (0: 4 × Concurrency; -1: none, they
	// wait in the paid window). ManifestTarget is how many requests of
	// each manifest batch are kept created and queued (default 2000).
	FeedLead       time.Duration
	UrgentShare    float64
	FreeWindow     int
	ManifestTarget int
	// LeaseTTL is how long a running crop's lease lasts unrenewed (default
	// 10s): the crops of a worker that died run again elsewhere about this
	// long after.
	LeaseTTL time.Duration

	// DedupScope is whose stored results a crop may reuse instead of
	// paying again: "tenant" (the default), "global" or "off".
	// DedupSource is what makes a URL image the same: "validators" (the
	// default), "bytes" or "url". DedupTTL is how long a stored result
	// stays reusable (default 30 days).
	DedupScope  string
	DedupSource string
	DedupTTL    time.Duration

	// WebhookSecret signs the callbacks of requests with a callback URL;
	// without it they are not called. WebhookAllow are the private
	// prefixes callbacks may reach; WebhookTimeout bounds one delivery
	// (default 10s).
	WebhookSecret  string
	WebhookAllow   []netip.Prefix
	WebhookTimeout time.Duration

	// ClaimCheckBytes and EnqueueConcurrency are the producer's
	// (producer.Config) for the requests the manifest reader creates.
	ClaimCheckBytes    int
	EnqueueConcurrency int

	// Logger receives the worker's logs (default: discarded).
	Logger *slog.Logger
	// Metrics, when set, registers the worker's Prometheus collectors:
	// the pipeline's, the quota's, the backlog's, asynq's queues', Redis's
	// writability and this clock's skew. Nil: nothing is measured.
	Metrics prometheus.Registerer
	// TracerProvider makes a span of each attempt and of its steps, in the
	// request's trace. Nil: no spans.
	TracerProvider trace.TracerProvider
	// Clock is the worker's wall clock (default time.Now), and that of API
	// and Status when theirs are unset; BudgetClock is the clock of the
	// budgets' periods (default Clock). Tests move them.
	Clock, BudgetClock func() time.Time
}

// Worker is a running worker's parts: built by New, run once by Run.
type Worker struct {
	server   *handling.Server
	feeder   *backlog.Feeder
	handler  *handling.Handler
	producer *producer.Producer // the manifest reader's
	leases   *lease.Leases
	reports  *reports.Writer
	records  *records.Store
	copier   *results.Copier
	log      *slog.Logger
}

// New builds a worker from cfg; nothing runs until Run. It warns on
// cfg.Logger when this clock is off Redis's by more than a few seconds.
func New(ctx context.Context, cfg Config) (*Worker, error) {
	if cfg.Redis == nil {
		return nil, errors.New("worker: Config.Redis is required")
	}
	rdb := cfg.Redis
	log := cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	budgetClock := cfg.BudgetClock
	if budgetClock == nil {
		budgetClock = clock
	}
	if cfg.Status.Now == nil {
		cfg.Status.Now = clock
	}
	if cfg.API.Now == nil {
		cfg.API.Now = clock
	}
	prefix := cmp.Or(cfg.Status.Prefix, status.DefaultPrefix)
	cfg.Status.Prefix = prefix
	queue := cmp.Or(cfg.Task.Queue, tasks.DefaultQueue)
	task := cfg.Task
	task.Queue, task.Limits, task.CallbackAllow = queue, cfg.API.Limits, cfg.WebhookAllow
	inputs := cfg.Inputs
	inputs.Bucket = cmp.Or(inputs.Bucket, cfg.Bucket)
	// The walls between tenants in S3: checked again before paying, and
	// applied to every key the worker writes.
	walls := namespace.Walls{DefaultBucket: cfg.Bucket, TenantBuckets: cfg.TenantBuckets,
		Inputs: namespace.Place{Bucket: inputs.Bucket, Prefix: cmp.Or(inputs.Prefix, storage.DefaultInputsPrefix)}}
	if err := walls.Validate(); err != nil {
		return nil, fmt.Errorf("worker: Config.TenantBuckets: %w", err)
	}
	task.Destinations = walls
	caps := map[string]budget.Cap{}
	for tenant, v := range cfg.TenantBudgets {
		c, err := budget.ParseCap(v)
		if err != nil {
			return nil, fmt.Errorf("worker: Config.TenantBudgets[%s]: %w", tenant, err)
		}
		caps[tenant] = c
	}
	scope, err := dedup.ParseScope(cmp.Or(cfg.DedupScope, string(dedup.ScopeTenant)))
	if err != nil {
		return nil, fmt.Errorf("worker: Config.DedupScope: %w", err)
	}
	mode, err := dedup.ParseSourceMode(cfg.DedupSource)
	if err != nil {
		return nil, fmt.Errorf("worker: Config.DedupSource: %w", err)
	}
	warnClockSkew(ctx, clock, rdb, log)

	api, err := cropapi.NewClient(cfg.API)
	if err != nil {
		return nil, err
	}
	s3c, err := storage.NewS3Client(ctx, cfg.S3)
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	rcfg := results.Config{Bucket: cfg.Bucket, KeyTemplate: cfg.KeyTemplate, MaxDownloadBytes: cfg.MaxResultBytes,
		MaxConcurrentMultipart: cfg.MultipartUploads, ResultHosts: cfg.ResultHosts, AllowHTTP: cfg.ResultAllowHTTP,
		Now: clock, Walls: walls}
	copier, err := results.New(s3c, rcfg)
	if err != nil {
		return nil, err
	}
	st := records.NewStore(rdb, cfg.Status)
	in, err := storage.NewInputs(s3c, inputs)
	if err != nil {
		return nil, err
	}
	scfg := handling.ServerConfig{Concurrency: cfg.Concurrency, Queues: map[string]int{queue: 1},
		ShutdownTimeout: cfg.ShutdownTimeout, DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		Backoff: handling.Backoff{Base: cfg.RetryBase, Cap: cfg.RetryCap}, Logger: log}
	hcfg := handling.HandlerConfig{Limits: cfg.API.Limits, Destinations: walls, Logger: log, Inputs: in, Now: clock,
		TracerProvider: cfg.TracerProvider}
	tenants := metrics.KnownTenants(slices.Collect(maps.Keys(cfg.TenantWeights))...)
	bl := backlog.New(rdb, backlog.Config{Prefix: prefix})
	if reg := cfg.Metrics; reg != nil {
		hcfg.Metrics = metrics.NewPipeline(reg, tenants)
		// The API exports the backlog too; dashboards take the max.
		metrics.RegisterBacklog(reg, bl.MetricStats, tenants)
		metrics.RegisterClockSkew(reg, func(ctx context.Context) (time.Duration, error) { return clockSkew(ctx, clock, rdb) })
		metrics.RegisterQueues(reg, asynq.NewInspectorFromRedisClient(rdb))
	}
	var notifier producer.Notifier
	if cfg.WebhookSecret == "" {
		log.Warn("worker: no WebhookSecret (CROPQ_WEBHOOK_SECRET): callbackUrl of requests is not called")
	} else {
		d, err := delivery.NewDeliverer(delivery.Config{Secret: []byte(cfg.WebhookSecret), Allow: cfg.WebhookAllow,
			Timeout: cfg.WebhookTimeout, Logger: log, TracerProvider: cfg.TracerProvider})
		if err != nil {
			return nil, err
		}
		n := delivery.Notifier{Client: asynq.NewClientFromRedisClient(rdb)}
		hcfg.Notifier, notifier = n, n
		scfg.Handlers = map[string]asynq.Handler{delivery.TypeDeliver: d}
		// Crops first; callbacks are small and wait little.
		scfg.Queues = map[string]int{queue: 4, delivery.DefaultQueue: 1}
	}
	qcfg := quota.Config{Account: cfg.API.AppKey, Prefix: prefix, Rate: cfg.QuotaRate, Burst: cfg.QuotaBurst,
		MaxWait: cfg.QuotaMaxWait, Adaptive: !cfg.FixedQuotaRate, MinRate: cfg.QuotaMinRate}
	if !cfg.UnsharedQuota {
		lcfg := qcfg
		lcfg.Logger = log
		limiter := quota.New(rdb, lcfg)
		hcfg.Quota = limiter
		if cfg.Metrics != nil {
			metrics.RegisterQuota(cfg.Metrics, limiter.Rates)
		}
	}
	var budgets *budget.Budgets
	if len(caps) > 0 {
		budgets = budget.New(rdb, budget.Config{Prefix: prefix, Caps: caps, Now: budgetClock})
		hcfg.Budget = budgets
	}
	leases := lease.New(rdb, lease.Config{Prefix: prefix, TTL: cfg.LeaseTTL, Logger: log})
	hcfg.Leases = handling.RedisLeases(leases)
	enq := backlog.TaskEnqueuer{Client: asynq.NewClientFromRedisClient(rdb), Options: task, Records: st,
		Inspector: asynq.NewInspectorFromRedisClient(rdb)}
	var index *dedup.Index
	free := queue + "-free"
	if scope != dedup.ScopeOff {
		// The API endpoint is part of the key: another vendor region or
		// version may crop differently.
		dcfg := dedup.Config{Prefix: prefix, TTL: cfg.DedupTTL,
			Keyer: dedup.Keyer{Scope: scope, Variant: cmp.Or(cfg.API.BaseURL, cropapi.DefaultBaseURL), Mode: mode}}
		if mode != dedup.SourceURL {
			dcfg.Fetch = dedup.NewFetcher(dedup.FetchConfig{AllowPrivate: cfg.API.Limits.AllowPrivateHosts})
		}
		index = dedup.New(rdb, dcfg)
		hcfg.Dedup, hcfg.Reuse = handling.RedisDedup(index), copier
		// Served even with the free window off, so that tasks fed into it
		// before are run.
		scfg.Queues = maps.Clone(scfg.Queues)
		scfg.Queues[free] = max(scfg.Queues[queue], 1)
		if cfg.FreeWindow >= 0 {
			// Work that needs no call has a queue of its own, outside the
			// quota's window (package backlog's free.go).
			hcfg.FreeQueue, hcfg.Handoff = free, enq
			// Free work drains its window in a moment: look for more soon
			// rather than after asynq's idle second.
			scfg.TaskCheckInterval = 100 * time.Millisecond
		}
	}
	h := handling.NewHandler(api, copier, st, hcfg)
	if cfg.Metrics != nil {
		metrics.RegisterRedisWritable(cfg.Metrics, st.Writable)
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
	rate := quota.FleetRate(rdb, qcfg, !cfg.UnsharedQuota)
	// The feeder's leader also reads the manifests of manifest batches,
	// creating their requests through the producer's path.
	pcfg := producer.Config{Task: task, Status: cfg.Status, Inputs: in, ClaimCheckBytes: cfg.ClaimCheckBytes,
		Concurrency: cfg.EnqueueConcurrency, Logger: log, Backlog: true, Weights: cfg.TenantWeights, Rate: rate,
		Manifests: manifest.S3{Client: s3c}, ReadWalls: walls, TracerProvider: cfg.TracerProvider, Notifier: notifier}
	if budgets != nil {
		pcfg.Budgets = budgets
	}
	prod := producer.New(rdb, pcfg)
	reader := manifest.NewReader(st, manifest.S3{Client: s3c}, prod, manifest.Config{Target: cfg.ManifestTarget, Logger: log, TracerProvider: cfg.TracerProvider})
	fcfg := backlog.FeederConfig{Queue: queue, Lead: cfg.FeedLead, Weights: cfg.TenantWeights,
		UrgentShare: cfg.UrgentShare, Demoter: urgentDemoter{records: st, metrics: hcfg.Metrics}, Budgets: feederBudgets(budgets),
		Rate: rate, Rescue: rescue, Refiller: reader, Logger: log}
	if hcfg.FreeQueue != "" {
		fenq := enq
		fenq.Options.Queue = free
		fcfg.Classify = backlog.IndexClassifier{Records: st, Hint: index.HintKey, Known: index.Known}
		fcfg.FreeQueue, fcfg.FreeEnqueuer = free, fenq
		// Sized by the workers, not the quota: a few rounds of this
		// process's concurrency, topped up every tick.
		fcfg.FreeWindow = cfg.FreeWindow
		if fcfg.FreeWindow == 0 {
			fcfg.FreeWindow = 4 * cmp.Or(cfg.Concurrency, handling.DefaultConcurrency)
		}
	}
	// The feeder's leader also writes the reports of batches with a report
	// destination once they are done, through the results' S3 client.
	rw := reports.New(st, reports.NewUploader(s3c, rcfg.PartSize), reports.Config{Walls: walls, Logger: log})
	return &Worker{server: handling.NewServer(rdb, scfg, h), feeder: bl.NewFeeder(enq, fcfg), handler: h, leases: leases,
		reports: rw, records: st, copier: copier, log: log, producer: prod}, nil
}

// Run serves until ctx ends, then drains: it stops taking tasks and gives
// running crops up to Config.ShutdownTimeout to finish (the rest go back to
// the queue, unpaid or with their paid answer kept). Call it once.
func (w *Worker) Run(ctx context.Context) error {
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
	err := w.server.Run(ctx)
	stopLeases()
	wg.Wait()
	return errors.Join(err, w.producer.Close())
}

// Ready checks the worker's dependencies: Redis takes writes (an OOM or a
// read-only replica does not) and the results' bucket answers. A readiness
// probe's answer, with Draining.
func (w *Worker) Ready(ctx context.Context) error {
	if err := w.records.Writable(ctx); err != nil {
		return err
	}
	if err := w.copier.CheckBucket(ctx); err != nil {
		return fmt.Errorf("s3 bucket: %w", err)
	}
	return nil
}

// Draining reports whether Run is shutting down: no longer ready, still
// alive.
func (w *Worker) Draining() bool { return w.server.Draining() }

// feederBudgets is budgets as the feeder takes them: none when nil (a nil
// *Budgets in the interface would not be nil).
func feederBudgets(b *budget.Budgets) backlog.Budgets {
	if b == nil {
		return nil
	}
	return b
}

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

// warnClockSkew logs when this worker's clock is off Redis's by more than
// a few seconds: result expiry does not trust local clocks, but asynq's
// recoverer does (its leases last 30 s).
func warnClockSkew(ctx context.Context, clock func() time.Time, rdb redis.UniversalClient, log *slog.Logger) {
	d, err := clockSkew(ctx, clock, rdb)
	if err == nil && (d > 5*time.Second || d < -5*time.Second) {
		log.Warn("worker: this clock is off Redis's; asynq may hand running tasks to other workers", "skew", d.Round(time.Millisecond).String())
	}
}
