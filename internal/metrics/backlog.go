package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BacklogStat is the backlog of one lane and tenant.
type BacklogStat struct {
	Lane, Tenant string
	Len          int64
	Oldest       time.Time
}

// BacklogReader reads the backlog (backlog.Backlog.Stats, converted).
type BacklogReader func(ctx context.Context) ([]BacklogStat, error)

// TenantLabel bounds the tenant label: tenants it knows (configured weights)
// keep their name, every other tenant counts as "~other" (no tenant can be
// named so), so that a producer inventing tenants cannot grow the series
// without end.
type TenantLabel func(tenant string) string

// OtherTenants is the label of the tenants a TenantLabel does not know.
const OtherTenants = "~other"

// KnownTenants is a TenantLabel for a fixed list ("default" always known).
func KnownTenants(tenants ...string) TenantLabel {
	known := map[string]bool{"default": true}
	for _, t := range tenants {
		known[t] = true
	}
	return func(t string) string {
		if known[t] {
			return t
		}
		return OtherTenants
	}
}

type backlogCollector struct {
	read      BacklogReader
	label     TenantLabel
	size, age *prometheus.Desc
	total     *prometheus.Desc
}

// RegisterBacklog exports the backlog at scrape time: requests waiting and
// the age of the oldest, per lane and tenant, and their total (what the
// fleet scales on).
func RegisterBacklog(reg prometheus.Registerer, read BacklogReader, label TenantLabel) {
	reg.MustRegister(&backlogCollector{read: read, label: label,
		size: prometheus.NewDesc(namespace+"_backlog_requests", "Requests waiting in the backlog, by lane and tenant.", []string{"lane", "tenant"}, nil),
		age: prometheus.NewDesc(namespace+"_backlog_oldest_age_seconds", "Age of the oldest request waiting in the backlog, by lane and tenant.",
			[]string{"lane", "tenant"}, nil),
		total: prometheus.NewDesc(namespace+"_backlog_requests_total", "Requests waiting in the backlog, all lanes and tenants.", nil, nil),
	})
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.size
	ch <- c.age
	ch <- c.total
}

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stats, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.total, err)
		return
	}
	type key struct{ lane, tenant string }
	size := map[key]int64{}
	oldest := map[key]time.Time{}
	var total int64
	for _, st := range stats {
		k := key{st.Lane, c.label(st.Tenant)}
		size[k] += st.Len
		total += st.Len
		if o, ok := oldest[k]; !ok || st.Oldest.Before(o) {
			oldest[k] = st.Oldest
		}
	}
	now := time.Now()
	for k, n := range size {
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(n), k.lane, k.tenant)
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, now.Sub(oldest[k]).Seconds(), k.lane, k.tenant)
	}
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(total))
}
