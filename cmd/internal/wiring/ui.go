package wiring

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/webui"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/storage"
)

// uiLinkTTL is how long the web UI's links to stored crops live.
const uiLinkTTL = 15 * time.Minute

// NewWebUI wires cropq's own page (package webui) for `cropq api`, and
// registers on reg the fleet-wide figures it shows, so that the page and
// /metrics read the same sources.
func NewWebUI(ctx context.Context, cfg Config, rdb redis.UniversalClient, prod *producer.Producer, api *httpapi.API,
	reg prometheus.Registerer, log *slog.Logger) (*webui.UI, error) {
	s3c, err := storage.NewS3Client(ctx, cfg.S3)
	if err != nil {
		return nil, err
	}
	st := records.NewStore(rdb, cfg.Status)
	bl := NewBacklog(cfg, rdb)
	ucfg := webui.Config{Records: st, Batches: prod, Links: results.NewPresigner(s3c, uiLinkTTL), Tenant: api.Tenant,
		Backlog: bl, Weights: cfg.TenantWeights, Replay: prod.Replay, Logger: log}
	if cfg.Dedup.Scope != dedup.ScopeOff {
		ucfg.Saved = dedup.New(rdb, cfg.Dedup).Saved
	}
	if copier, err := results.New(s3c, cfg.Storage); err == nil {
		ucfg.Storage = copier.CheckBucket
	}
	if cfg.QuotaShared {
		limiter := quota.New(rdb, cfg.Quota)
		ucfg.Quota = limiter
		metrics.RegisterQuota(reg, limiter.Rates)
		metrics.RegisterUsage(reg, func(ctx context.Context) (metrics.Usage, error) {
			u, err := limiter.Usage(ctx)
			return metrics.Usage{CallsLastHour: u.CallsLastHour, CallsToday: u.CallsToday, LimitedLastHour: u.LimitedLastHour, LimitedToday: u.LimitedToday}, err
		})
	}
	metrics.RegisterFailures(reg, func(ctx context.Context) (map[string]int64, error) {
		return st.FailuresSince(ctx, time.Now().Add(-time.Hour))
	})
	// The workers export the backlog too; dashboards and KEDA take the max.
	metrics.RegisterBacklog(reg, bl.MetricStats, metrics.KnownTenants(slices.Collect(maps.Keys(cfg.TenantWeights))...))
	if len(cfg.Budget.Caps) > 0 {
		budgets := budget.New(rdb, cfg.Budget)
		ucfg.Budgets = budgets.Usages
		metrics.RegisterBudgets(reg, budgetReader(budgets))
	}
	return webui.New(ucfg)
}

// budgetReader reads b's usage for the metrics.
func budgetReader(b *budget.Budgets) metrics.BudgetReader {
	return func(ctx context.Context) ([]metrics.BudgetUsage, error) {
		us, err := b.Usages(ctx)
		out := make([]metrics.BudgetUsage, len(us))
		for i, u := range us {
			out[i] = metrics.BudgetUsage{Tenant: u.Tenant, Used: u.Used, Cap: u.Cap}
		}
		return out, err
	}
}
