package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Usage is the account's API calls counted fleet-wide (quota.Usage).
type Usage struct {
	CallsLastHour, CallsToday, LimitedLastHour, LimitedToday int64
}

// UsageReader reads the account's calls (quota.Limiter.Usage, converted).
type UsageReader func(ctx context.Context) (Usage, error)

// FailuresReader reads the failures of the last hour by error code
// (records.Store.FailuresSince).
type FailuresReader func(ctx context.Context) (map[string]int64, error)

type usageCollector struct {
	read                                 UsageReader
	callsHour, callsDay, limHour, limDay *prometheus.Desc
}

// RegisterUsage exports the account's calls in the last hour and today
// (UTC), and the rate-limited answers among them (501/429), read from Redis
// at scrape time: every pod exports the fleet's figures, which are also the
// web UI's.
func RegisterUsage(reg prometheus.Registerer, read UsageReader) {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, nil, nil)
	}
	reg.MustRegister(&usageCollector{read: read,
		callsHour: d("quota_calls_last_hour", "API calls made by the fleet in the last 60 minutes."),
		callsDay:  d("quota_calls_today", "API calls made by the fleet today (UTC)."),
		limHour:   d("quota_rate_limited_last_hour", "API calls answered rate-limited (501/429) in the last 60 minutes."),
		limDay:    d("quota_rate_limited_today", "API calls answered rate-limited (501/429) today (UTC)."),
	})
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.callsHour
	ch <- c.callsDay
	ch <- c.limHour
	ch <- c.limDay
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	u, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.callsHour, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.callsHour, prometheus.GaugeValue, float64(u.CallsLastHour))
	ch <- prometheus.MustNewConstMetric(c.callsDay, prometheus.GaugeValue, float64(u.CallsToday))
	ch <- prometheus.MustNewConstMetric(c.limHour, prometheus.GaugeValue, float64(u.LimitedLastHour))
	ch <- prometheus.MustNewConstMetric(c.limDay, prometheus.GaugeValue, float64(u.LimitedToday))
}

type failuresCollector struct {
	read FailuresReader
	desc *prometheus.Desc
}

// RegisterFailures exports the requests that failed in the last hour, by
// error code (a bounded set: the API's codes and the worker's).
func RegisterFailures(reg prometheus.Registerer, read FailuresReader) {
	reg.MustRegister(&failuresCollector{read: read, desc: prometheus.NewDesc(namespace+"_failures_last_hour",
		"Requests that failed for good in the last 60 minutes, by error code.", []string{"code"}, nil)})
}

func (c *failuresCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *failuresCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for code, n := range m {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), code)
	}
}

// BudgetUsage is a tenant's budget of paid calls and what it spent of it
// this period (budget.Usage).
type BudgetUsage struct {
	Tenant    string
	Used, Cap int64
}

// BudgetReader reads the budgeted tenants' usage.
type BudgetReader func(ctx context.Context) ([]BudgetUsage, error)

type budgetCollector struct {
	read             BudgetReader
	ratio, used, cap *prometheus.Desc
}

// RegisterBudgets exports each budgeted tenant's spent share of its budget
// this period (CROPQ_TENANT_BUDGETS), read from Redis at scrape time. The
// tenants are the configured ones: the label is bounded.
func RegisterBudgets(reg prometheus.Registerer, read BudgetReader) {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, []string{"tenant"}, nil)
	}
	reg.MustRegister(&budgetCollector{read: read,
		ratio: d("tenant_budget_used_ratio", "Paid API calls of the tenant this period over its budget (1: spent; its work waits for the next period)."),
		used:  d("tenant_budget_used_calls", "Paid API calls of the tenant this period."),
		cap:   d("tenant_budget_calls", "The tenant's budget of paid API calls per period."),
	})
}

func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ratio
	ch <- c.used
	ch <- c.cap
}

func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	us, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.ratio, err)
		return
	}
	for _, u := range us {
		r := 1.0
		if u.Cap > 0 {
			r = float64(u.Used) / float64(u.Cap)
		}
		ch <- prometheus.MustNewConstMetric(c.ratio, prometheus.GaugeValue, r, u.Tenant)
		ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(u.Used), u.Tenant)
		ch <- prometheus.MustNewConstMetric(c.cap, prometheus.GaugeValue, float64(u.Cap), u.Tenant)
	}
}
