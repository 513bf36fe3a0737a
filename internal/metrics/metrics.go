// Package metrics holds cropq's Prometheus metrics: what the pipeline does
// (API calls by code and their latency, the shared quota, result copies,
// terminal states, paid usage), registered next to asynq's queue metrics.
// Labels are bounded sets (codes, states); a request id is never a label.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "cropq"

// Pipeline are the worker's metrics. A nil *Pipeline records nothing, so
// code paths need no checks.
type Pipeline struct {
	apiCalls      *prometheus.CounterVec
	apiLatency    *prometheus.HistogramVec
	paidUsage     prometheus.Counter
	quotaWait     prometheus.Histogram
	quotaDeferred prometheus.Counter
	storageDefer  prometheus.Counter
	copyBytes     prometheus.Counter
	copyDuration  *prometheus.HistogramVec
	terminal      *prometheus.CounterVec
	tenantCalls   *prometheus.CounterVec
	rescued       prometheus.Counter
	tenantLabel   TenantLabel
	callsSaved    *prometheus.CounterVec
	urgentDemoted *prometheus.CounterVec
	revalidations *prometheus.CounterVec
	revalLatency  *prometheus.HistogramVec
}

// NewPipeline registers the pipeline's metrics on reg; tenants bounds the
// tenant label (nil: every tenant is OtherTenants but "default").
func NewPipeline(reg prometheus.Registerer, tenants TenantLabel) *Pipeline {
	f := func(c prometheus.Collector) prometheus.Collector { reg.MustRegister(c); return c }
	if tenants == nil {
		tenants = KnownTenants()
	}
	return &Pipeline{
		tenantLabel: tenants,
		tenantCalls: f(prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "tenant_paid_calls_total",
			Help: "Paid (successful) API calls by tenant: the shares of the account."}, []string{"tenant"})).(*prometheus.CounterVec),
		apiCalls: f(prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "api_calls_total",
			Help: "Calls to the Image Cropping API by result code (200, 501, 700, …, a gateway code, http_429, transport)."}, []string{"code"})).(*prometheus.CounterVec),
		apiLatency: f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "api_call_duration_seconds",
			Help: "Latency of Image Cropping API calls, by outcome class.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 10)}, []string{"class"})).(*prometheus.HistogramVec),
		paidUsage: f(prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "api_usage_total",
			Help: "Usage billed by successful API calls (what the account pays for)."})).(prometheus.Counter),
		quotaWait: f(prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "quota_wait_seconds",
			Help: "Time waited in place for a token of the shared quota.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)})).(prometheus.Histogram),
		quotaDeferred: f(prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "quota_deferred_total",
			Help: "Tasks handed back because no quota token came within the wait bound."})).(prometheus.Counter),
		storageDefer: f(prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "storage_deferred_total",
			Help: "Tasks handed back unpaid because the bucket was unreachable (the storage gate)."})).(prometheus.Counter),
		copyBytes: f(prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "result_copy_bytes_total",
			Help: "Bytes of results copied into S3."})).(prometheus.Counter),
		copyDuration: f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "result_copy_duration_seconds",
			Help: "Duration of result copies into S3, by outcome (ok, error).", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}, []string{"outcome"})).(*prometheus.HistogramVec),
		rescued: f(prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "rescued_total",
			Help: "Running crops handed to another worker because theirs stopped renewing its lease (killed, frozen, cut off)."})).(prometheus.Counter),
		callsSaved: f(prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "api_calls_saved_total",
			Help: "Paid API calls not made because the same crop was stored already (reused), by a twin in flight (coalesced), or already at the request's destination (unchanged)."}, []string{"reason"})).(*prometheus.CounterVec),
		revalidations: f(prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "dedup_revalidations_total",
			Help: "Requests to an image's origin before reusing a result keyed by its URL (CROPQ_DEDUP_SOURCE=validators), by outcome: unchanged (304 or the same validators), changed, no_validator (the bytes were downloaded and hashed)."},
			[]string{"outcome"})).(*prometheus.CounterVec),
		revalLatency: f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "dedup_revalidation_duration_seconds",
			Help: "Latency of revalidations at an image's origin, by outcome.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"outcome"})).(*prometheus.HistogramVec),
		urgentDemoted: f(prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "urgent_demoted_total",
			Help: "Urgent requests fed as normal because their tenant was beyond its urgent share of the quota (CROPQ_URGENT_SHARE), by tenant."},
			[]string{"tenant"})).(*prometheus.CounterVec),
		terminal: f(prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "tasks_finished_total",
			Help: "Crop requests that reached a terminal state, by state (succeeded, failed) and error code (\"\" when none)."}, []string{"state", "code"})).(*prometheus.CounterVec),
	}
}

// APICall records one API call.
func (p *Pipeline) APICall(code, class string, d time.Duration, usage int) {
	if p == nil {
		return
	}
	p.apiCalls.WithLabelValues(code).Inc()
	p.apiLatency.WithLabelValues(class).Observe(d.Seconds())
	if usage > 0 {
		p.paidUsage.Add(float64(usage))
	}
}

// PaidCall records a paid call made for tenant.
func (p *Pipeline) PaidCall(tenant string) {
	if p == nil {
		return
	}
	p.tenantCalls.WithLabelValues(p.tenantLabel(tenant)).Inc()
}

// UrgentDemoted counts an urgent request of tenant fed as normal.
func (p *Pipeline) UrgentDemoted(tenant string) {
	if p == nil {
		return
	}
	p.urgentDemoted.WithLabelValues(p.tenantLabel(tenant)).Inc()
}

// Rescued counts crops handed back by the rescuer because their worker
// stopped renewing its lease.
func (p *Pipeline) Rescued(n int) {
	if p == nil || n == 0 {
		return
	}
	p.rescued.Add(float64(n))
}

// QuotaWait records a wait for a token; deferred when none came in time.
func (p *Pipeline) QuotaWait(d time.Duration, deferred bool) {
	if p == nil {
		return
	}
	p.quotaWait.Observe(d.Seconds())
	if deferred {
		p.quotaDeferred.Inc()
	}
}

// StorageDeferred records a task handed back unpaid by the storage gate.
func (p *Pipeline) StorageDeferred() {
	if p == nil {
		return
	}
	p.storageDefer.Inc()
}

// Copy records a result copy.
func (p *Pipeline) Copy(bytes int64, d time.Duration, err error) {
	if p == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	p.copyDuration.WithLabelValues(outcome).Observe(d.Seconds())
	p.copyBytes.Add(float64(bytes))
}

// Finished records a terminal state.
func (p *Pipeline) Finished(state, code string) {
	if p == nil {
		return
	}
	p.terminal.WithLabelValues(state, code).Inc()
}

// QuotaReader reads the shared quota (quota.Limiter.State, reduced).
type QuotaReader func(ctx context.Context) (effective, ceiling float64, err error)

// quotaCollector reads the shared quota at scrape time, so every pod
// exports the fleet's current rate without a background loop.
type quotaCollector struct {
	read                 QuotaReader
	effective, ceilingDs *prometheus.Desc
}

// RegisterQuota exports the shared quota's effective rate and ceiling.
func RegisterQuota(reg prometheus.Registerer, read QuotaReader) {
	reg.MustRegister(&quotaCollector{read: read,
		effective: prometheus.NewDesc(namespace+"_quota_effective_rate", "The fleet's adapted API call rate (calls/s).", nil, nil),
		ceilingDs: prometheus.NewDesc(namespace+"_quota_ceiling_rate", "The configured API call rate ceiling (calls/s).", nil, nil)})
}

func (c *quotaCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.effective; ch <- c.ceilingDs }

func (c *quotaCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	eff, ceil, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.effective, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.effective, prometheus.GaugeValue, eff)
	ch <- prometheus.MustNewConstMetric(c.ceilingDs, prometheus.GaugeValue, ceil)
}

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// RegisterQueues adds asynq's queue metrics (sizes by state, latency,
// processed and failed counts), read through insp at scrape time. One
// process per deployment is enough (they describe Redis, not the pod).
func RegisterQueues(reg prometheus.Registerer, insp *asynq.Inspector) {
	reg.MustRegister(asynqmetrics.NewQueueMetricsCollector(insp))
}

// Health serves /healthz (alive), /readyz (ready checks pass and not
// draining) and /metrics.
type Health struct {
	Registry *prometheus.Registry
	// Ready checks dependencies (Redis ping, S3 bucket); nil means ready.
	Ready func(ctx context.Context) error
	// Draining reports a shutdown in progress: not ready, still alive.
	Draining func() bool
}

// Handler returns the endpoints' mux.
func (h Health) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		err := h.check(r.Context())
		w.Header().Set("Content-Type", "text/plain")
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if h.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(h.Registry, promhttp.HandlerOpts{Registry: h.Registry}))
	}
	return mux
}

// ErrDraining is the readiness answer of a process that is shutting down.
var ErrDraining = errors.New("draining")

func (h Health) check(ctx context.Context) error {
	if h.Draining != nil && h.Draining() {
		return ErrDraining
	}
	if h.Ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return h.Ready(ctx)
}

// Revalidated records one revalidation at an image's origin.
func (p *Pipeline) Revalidated(outcome string, d time.Duration) {
	if p == nil {
		return
	}
	p.revalidations.WithLabelValues(outcome).Inc()
	p.revalLatency.WithLabelValues(outcome).Observe(d.Seconds())
}

// CallSaved records a paid call not made: the request reused a stored
// result (reason "reused"), a twin's in flight ("coalesced"), or found it
// at its destination already ("unchanged").
func (p *Pipeline) CallSaved(reason string) {
	if p == nil {
		return
	}
	p.callsSaved.WithLabelValues(reason).Inc()
}
