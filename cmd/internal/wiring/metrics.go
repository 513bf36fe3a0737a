package wiring

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/internal/quota"
)

// registerBacklog exports what waits in bl, per lane and tenant (the worker
// and the API both export it; dashboards and KEDA take the max).
func registerBacklog(reg prometheus.Registerer, cfg Config, bl *backlog.Backlog) {
	metrics.RegisterBacklog(reg, func(ctx context.Context) ([]metrics.BacklogStat, error) {
		stats, err := bl.Stats(ctx)
		out := make([]metrics.BacklogStat, len(stats))
		for i, s := range stats {
			out[i] = metrics.BacklogStat{Lane: s.Lane, Tenant: s.Tenant, Len: s.Len, Oldest: s.Oldest}
		}
		return out, err
	}, tenantLabel(cfg))
}

// registerQuota exports the shared quota's effective and ceiling rates.
func registerQuota(reg prometheus.Registerer, limiter *quota.Limiter) {
	metrics.RegisterQuota(reg, func(ctx context.Context) (float64, float64, error) {
		s, err := limiter.State(ctx)
		return s.Effective, s.Ceiling, err
	})
}
