package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SkewReader measures the local clock against a reference (Redis's TIME):
// positive when the local clock is ahead.
type SkewReader func(ctx context.Context) (time.Duration, error)

type skewCollector struct {
	read SkewReader
	desc *prometheus.Desc
}

// RegisterClockSkew exports how far this process's clock is from Redis's.
func RegisterClockSkew(reg prometheus.Registerer, read SkewReader) {
	reg.MustRegister(&skewCollector{read: read, desc: prometheus.NewDesc(namespace+"_clock_skew_seconds",
		"This process's clock less Redis's TIME (positive: ahead).", nil, nil)})
}

func (c *skewCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *skewCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, d.Seconds())
}

// RegisterRedisWritable exports whether Redis takes a write (1) or refuses
// it (0: OOM at maxmemory with noeviction, or read-only), checked by
// writable at scrape time: reads alone say nothing of it.
func RegisterRedisWritable(reg prometheus.Registerer, writable func(ctx context.Context) error) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "redis_writable",
		Help: "1 when Redis takes a write, 0 when it refuses them (OOM at maxmemory with noeviction, or read-only)."},
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if writable(ctx) != nil {
				return 0
			}
			return 1
		}))
}
