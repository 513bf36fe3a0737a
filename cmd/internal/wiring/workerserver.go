package wiring

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/worker"
)

// WorkerConfig is the public worker's configuration (package worker) from
// cfg, on rdb, logging to log and registering on reg (nil: not measured):
// what `cropq worker` and `cropq-dev dev` run.
func WorkerConfig(cfg Config, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer) worker.Config {
	wc := worker.Config{
		Redis:                    rdb,
		API:                      cfg.API,
		Task:                     cfg.Task,
		Status:                   cfg.Status,
		S3:                       cfg.S3,
		Bucket:                   cfg.Storage.Bucket,
		KeyTemplate:              cfg.Storage.KeyTemplate,
		TenantBuckets:            cfg.Storage.Walls.TenantBuckets,
		Inputs:                   cfg.Inputs,
		MaxResultBytes:           cfg.Storage.MaxDownloadBytes,
		MultipartUploads:         cfg.Storage.MaxConcurrentMultipart,
		ResultHosts:              cfg.Storage.ResultHosts,
		ResultAllowHTTP:          cfg.Storage.AllowHTTP,
		Concurrency:              cfg.Server.Concurrency,
		ShutdownTimeout:          cfg.Server.ShutdownTimeout,
		DelayedTaskCheckInterval: cfg.Server.DelayedTaskCheckInterval,
		RetryBase:                cfg.Server.Backoff.Base,
		RetryCap:                 cfg.Server.Backoff.Cap,
		QuotaRate:                cfg.Quota.Rate,
		QuotaBurst:               cfg.Quota.Burst,
		QuotaMaxWait:             cfg.Quota.MaxWait,
		QuotaMinRate:             cfg.Quota.MinRate,
		FixedQuotaRate:           !cfg.Quota.Adaptive,
		UnsharedQuota:            !cfg.QuotaShared,
		TenantWeights:            cfg.TenantWeights,
		FeedLead:                 cfg.FeedLead,
		UrgentShare:              cfg.UrgentShare,
		FreeWindow:               cfg.FreeWindow,
		ManifestTarget:           cfg.ManifestTarget,
		LeaseTTL:                 cfg.Lease.TTL,
		DedupScope:               string(cfg.Dedup.Scope),
		DedupSource:              string(cfg.Dedup.Mode),
		DedupTTL:                 cfg.Dedup.TTL,
		WebhookSecret:            cfg.WebhookSecret,
		WebhookAllow:             cfg.WebhookAllow,
		WebhookTimeout:           cfg.WebhookTimeout,
		ClaimCheckBytes:          cfg.ClaimCheckBytes,
		EnqueueConcurrency:       cfg.EnqueueWorkers,
		Logger:                   log,
		Metrics:                  reg,
		TracerProvider:           cfg.TracerProvider,
		Clock:                    cfg.Clock,
		BudgetClock:              cfg.Budget.Now,
	}
	if len(cfg.Budget.Caps) > 0 {
		wc.TenantBudgets = map[string]string{}
		for tenant, c := range cfg.Budget.Caps {
			wc.TenantBudgets[tenant] = c.String()
		}
	}
	return wc
}
