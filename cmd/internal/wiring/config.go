package wiring

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/namespace"
	"github.com/cropq/cropq/internal/objectkey"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/redact"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

// Config is everything the subcommands wire from the environment.
type Config struct {
	RedisURL string
	Status   status.Config
	Task     tasks.Options
	API      cropapi.Config
	S3       storage.S3Config
	Storage  results.Config
	Server   worker.ServerConfig
	// Quota is the fleet-wide limiter; QuotaShared false leaves each worker
	// to back off on rate-limit answers alone.
	Quota       quota.Config
	QuotaShared bool

	Inputs          storage.InputsConfig
	ClaimCheckBytes int
	EnqueueWorkers  int

	WebhookSecret  string
	WebhookAllow   []netip.Prefix
	WebhookTimeout time.Duration

	// WorkerAddr serves a worker's /healthz, /readyz and /metrics.
	WorkerAddr string
	// Monitor configures the asynq web UI in `cropq api`.
	MonitorReadOnly bool
	MonitorAuth     bool
	PrometheusURL   string

	HTTP httpapi.Config
	// Tracing is what the standard OTEL_* variables ask for (package
	// tracing); TracerProvider is the provider the command started from
	// it (nil: tracing off), passed to every package that makes spans.
	Tracing        tracing.Config
	TracerProvider trace.TracerProvider
	// HTTPAddr is where `cropq api` listens.
	HTTPAddr string
	// APIMetricsAddr, when set, serves `cropq api`'s /metrics (and
	// /readyz, /healthz) without a token, for the cluster's scraper.
	APIMetricsAddr string

	// TenantWeights are the tenants' shares of the quota within a lane
	// (CROPQ_TENANT_WEIGHTS); a tenant not listed weighs 1. Nil when unset.
	TenantWeights map[string]int
	// Budget caps each tenant's paid calls per period
	// (CROPQ_TENANT_BUDGETS); no caps when unset.
	Budget budget.Config
	// FeedLead is how many seconds of calls the feeder keeps in asynq
	// ahead of the workers (CROPQ_FEED_LEAD).
	FeedLead time.Duration
	// ManifestTarget is how many of a manifest batch's requests the reader
	// keeps queued (CROPQ_MANIFEST_TARGET).
	ManifestTarget int
	// UrgentShare is the part of the effective rate each tenant's urgent
	// requests may take, weighted (CROPQ_URGENT_SHARE, in (0, 1]; 1: no
	// budget).
	UrgentShare float64
	// Lease is how long a running crop's lease lasts unrenewed: a dead or
	// frozen worker's crops run again elsewhere about this long after it
	// stopped (CROPQ_LEASE_TTL).
	Lease lease.Config
	// Clock is this process's wall clock: the system's, moved by
	// CROPQ_CLOCK_OFFSET (fault injection: a worker whose clock is off).
	Clock func() time.Time

	// Dedup is result reuse and coalescing (CROPQ_DEDUP_*); its Keyer's
	// Mode is CROPQ_DEDUP_SOURCE (CROPQ_DEDUP_FETCH=true: bytes). The
	// worker gives it a Fetcher for the validators and bytes modes.
	Dedup dedup.Config
	// FreeWindow is CROPQ_FREE_WINDOW: 0 for auto (4 × concurrency), -1
	// for off (no free queue).
	FreeWindow int
}

// LoadConfig reads the environment; every error names its variable.
func LoadConfig(env Env) (Config, error) {
	var c Config
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	dur := func(name string) time.Duration { v, err := env.Duration(name); add(err); return v }
	num := func(name string) int { v, err := env.Int(name); add(err); return v }
	boolean := func(name string) bool { v, err := env.Bool(name); add(err); return v }
	float := func(name string) float64 { v, err := env.Float(name); add(err); return v }
	secret := func(name string) string { v, err := env.Secret(name); add(err); return v }

	c.RedisURL = env.Get("CROPQ_REDIS_URL")
	c.Status = status.Config{Prefix: env.Get("CROPQ_KEY_PREFIX"), TTL: dur("CROPQ_STATUS_TTL")}
	c.Task = tasks.Options{
		Queue:     env.Get("CROPQ_QUEUE"),
		MaxRetry:  num("CROPQ_MAX_RETRY"),
		Timeout:   dur("CROPQ_TASK_TIMEOUT"),
		Retention: dur("CROPQ_RETENTION"),
	}
	c.API = cropapi.Config{
		BaseURL:   env.Get("CROPQ_API_BASE_URL"),
		AppKey:    env.Get("CROPQ_APP_KEY"),
		AppSecret: secret("CROPQ_APP_SECRET"),
		Trial:     boolean("CROPQ_API_TRIAL"),
		Timeout:   dur("CROPQ_API_TIMEOUT"),
		Limits:    cropapi.Limits{AllowPrivateHosts: boolean("CROPQ_ALLOW_PRIVATE_IMAGE_URLS")},
	}
	c.Task.Limits = c.API.Limits
	c.QuotaShared = boolean("CROPQ_QUOTA_SHARED")
	c.Quota = quota.Config{
		Account:  c.API.AppKey,
		Prefix:   c.Status.Prefix,
		Rate:     float("CROPQ_QUOTA_RATE"),
		Burst:    num("CROPQ_QUOTA_BURST"),
		MaxWait:  dur("CROPQ_QUOTA_MAX_WAIT"),
		Adaptive: boolean("CROPQ_QUOTA_ADAPTIVE"),
		MinRate:  float("CROPQ_QUOTA_MIN_RATE"),
	}

	endpoint := env.Get("CROPQ_S3_ENDPOINT")
	pathStyle := endpoint != ""
	if ps := env.Get("CROPQ_S3_PATH_STYLE"); ps != "auto" {
		pathStyle = boolean("CROPQ_S3_PATH_STYLE")
	}
	c.S3 = storage.S3Config{
		Endpoint:        endpoint,
		Region:          env.Get("AWS_REGION"),
		UsePathStyle:    pathStyle,
		AccessKeyID:     env.Get("AWS_ACCESS_KEY_ID"),
		SecretAccessKey: secret("AWS_SECRET_ACCESS_KEY"),
	}
	c.Storage = results.Config{
		Bucket:                 env.Get("CROPQ_S3_BUCKET"),
		KeyTemplate:            env.Get("CROPQ_KEY_TEMPLATE"),
		MaxDownloadBytes:       int64(num("CROPQ_MAX_RESULT_BYTES")),
		MaxConcurrentMultipart: num("CROPQ_MULTIPART_UPLOADS"),
		ResultHosts:            splitList(env.Get("CROPQ_RESULT_HOSTS")),
		AllowHTTP:              boolean("CROPQ_RESULT_ALLOW_HTTP"),
	}
	c.Inputs = storage.InputsConfig{Bucket: env.Get("CROPQ_INPUTS_BUCKET"), Prefix: env.Get("CROPQ_INPUTS_PREFIX")}
	if c.Inputs.Bucket == "" {
		c.Inputs.Bucket = c.Storage.Bucket
	}
	buckets, err := parseTenantBuckets(env.Get("CROPQ_TENANT_BUCKETS"))
	add(err)
	// The walls between tenants in S3: checked at every entrance and again by
	// the worker before paying, and applied to every key it writes.
	c.Storage.Walls = namespace.Walls{DefaultBucket: c.Storage.Bucket, TenantBuckets: buckets,
		Inputs: namespace.Place{Bucket: c.Inputs.Bucket, Prefix: cmp.Or(c.Inputs.Prefix, storage.DefaultInputsPrefix)}}
	if err := c.Storage.Walls.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("CROPQ_TENANT_BUCKETS: %w", err))
	}
	if key, err := objectkey.Render(c.Storage.KeyTemplate, objectkey.Vars{RequestID: "r", Width: 1, Height: 1, Ext: "png"}); err == nil {
		if _, _, err := c.Storage.Walls.Place(tasks.DefaultTenant, "", key); err != nil {
			errs = append(errs, fmt.Errorf("CROPQ_KEY_TEMPLATE: %w", err))
		}
	}
	c.Task.Destinations = c.Storage.Walls
	c.ClaimCheckBytes = num("CROPQ_CLAIM_CHECK_BYTES")
	c.EnqueueWorkers = num("CROPQ_ENQUEUE_CONCURRENCY")
	c.WebhookSecret = secret("CROPQ_WEBHOOK_SECRET")
	c.WebhookTimeout = dur("CROPQ_WEBHOOK_TIMEOUT")
	for _, cidr := range splitList(env.Get("CROPQ_WEBHOOK_ALLOW")) {
		pfx, err := netip.ParsePrefix(cidr)
		if err != nil {
			add(envError("CROPQ_WEBHOOK_ALLOW", cidr, "comma-separated CIDR prefixes such as 10.0.0.0/8"))
			continue
		}
		c.WebhookAllow = append(c.WebhookAllow, pfx)
	}
	// Entrances refuse callback URLs naming a private address literally,
	// except where deliveries may go.
	c.Task.CallbackAllow = c.WebhookAllow
	c.HTTPAddr = env.Get("CROPQ_API_ADDR")
	c.APIMetricsAddr = env.Get("CROPQ_API_METRICS_ADDR")
	c.WorkerAddr = env.Get("CROPQ_WORKER_ADDR")
	c.MonitorReadOnly = boolean("CROPQ_MONITOR_READONLY")
	c.MonitorAuth = boolean("CROPQ_MONITOR_AUTH")
	c.PrometheusURL = env.Get("CROPQ_PROMETHEUS_URL")
	c.HTTP = httpapi.Config{
		Tokens:            splitList(secret("CROPQ_API_TOKENS")),
		MaxBatch:          num("CROPQ_API_MAX_BATCH"),
		MaxBodyBytes:      int64(num("CROPQ_API_MAX_BODY_BYTES")),
		MaxBatchBodyBytes: int64(num("CROPQ_API_MAX_BATCH_BODY_BYTES")),
		MaxInflightBytes:  int64(num("CROPQ_API_MAX_INFLIGHT_BYTES")),
	}
	weights, err := parseTenantWeights(env.Get("CROPQ_TENANT_WEIGHTS"))
	add(err)
	c.TenantWeights = weights
	caps, err := parseTenantMap("CROPQ_TENANT_BUDGETS", env.Get("CROPQ_TENANT_BUDGETS"), "tenant=calls/period entries, comma-separated, such as acme=50000/day,globex=2000000/month,initech=100/hour",
		func(v string) (budget.Cap, string) {
			c, err := budget.ParseCap(v)
			if err != nil {
				return budget.Cap{}, "calls/period after =: a whole number of calls ≥ 0, a period of hour, day or month (UTC)"
			}
			return c, ""
		})
	add(err)
	c.Budget = budget.Config{Prefix: c.Status.Prefix, Caps: caps}
	c.FeedLead = dur("CROPQ_FEED_LEAD")
	c.ManifestTarget = num("CROPQ_MANIFEST_TARGET")
	c.UrgentShare, err = parseUrgentShare(env.Get("CROPQ_URGENT_SHARE"))
	add(err)
	offset, err := time.ParseDuration(env.Get("CROPQ_CLOCK_OFFSET"))
	if err != nil {
		errs = append(errs, envError("CROPQ_CLOCK_OFFSET", env.Get("CROPQ_CLOCK_OFFSET"), "a signed duration such as -10m or 90s"))
	}
	c.Clock = time.Now
	if offset != 0 {
		c.Clock = func() time.Time { return time.Now().Add(offset) }
	}
	c.Status.Now, c.Storage.Now, c.API.Now, c.Budget.Now = c.Clock, c.Clock, c.Clock, c.Clock
	if v := env.Get("CROPQ_BUDGET_CLOCK_OFFSET"); v != "0s" {
		bo, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, envError("CROPQ_BUDGET_CLOCK_OFFSET", v, "a signed duration such as 24h or -1h"))
		}
		clock := c.Clock
		c.Budget.Now = func() time.Time { return clock().Add(bo) }
	}
	c.Lease = lease.Config{Prefix: c.Status.Prefix, TTL: dur("CROPQ_LEASE_TTL")}
	if c.Lease.TTL > 0 && c.Lease.TTL < time.Second {
		errs = append(errs, fmt.Errorf("CROPQ_LEASE_TTL: %s is under 1s: a lease must outlive a few renewals (every fifth of it) over a slow network", c.Lease.TTL))
	}
	scope, err := dedup.ParseScope(env.Get("CROPQ_DEDUP_SCOPE"))
	if err != nil {
		add(envError("CROPQ_DEDUP_SCOPE", env.Get("CROPQ_DEDUP_SCOPE"), "tenant, global or off"))
	}
	// The API endpoint is part of the key: another vendor region or version
	// may crop differently.
	c.Dedup = dedup.Config{Prefix: c.Status.Prefix, TTL: dur("CROPQ_DEDUP_TTL"), Keyer: dedup.Keyer{Scope: scope, Variant: c.API.BaseURL}}
	mode, err := dedup.ParseSourceMode(env.Get("CROPQ_DEDUP_SOURCE"))
	if err != nil {
		add(envError("CROPQ_DEDUP_SOURCE", env.Get("CROPQ_DEDUP_SOURCE"), "validators, bytes or url"))
	}
	if boolean("CROPQ_DEDUP_FETCH") {
		// The older name of bytes; said otherwise twice, neither wins.
		if env.IsSet("CROPQ_DEDUP_SOURCE") && mode != dedup.SourceBytes {
			add(fmt.Errorf("CROPQ_DEDUP_FETCH=true (an alias of CROPQ_DEDUP_SOURCE=bytes) conflicts with CROPQ_DEDUP_SOURCE=%s: set one of them", mode))
		}
		mode = dedup.SourceBytes
	}
	c.Dedup.Mode = mode
	switch fw := env.Get("CROPQ_FREE_WINDOW"); fw {
	case "auto":
	case "off":
		c.FreeWindow = -1
	default:
		n, err := strconv.Atoi(fw)
		if err != nil || n < 1 || n > 100000 {
			add(envError("CROPQ_FREE_WINDOW", fw, "auto, off, or a number of tasks from 1 to 100000"))
		}
		c.FreeWindow = n
	}
	c.Server = worker.ServerConfig{
		Concurrency:              num("CROPQ_CONCURRENCY"),
		Queues:                   map[string]int{c.Task.Queue: 1},
		ShutdownTimeout:          dur("CROPQ_SHUTDOWN_TIMEOUT"),
		DelayedTaskCheckInterval: dur("CROPQ_DELAYED_CHECK_INTERVAL"),
		Backoff:                  worker.Backoff{Base: dur("CROPQ_RETRY_BASE"), Cap: dur("CROPQ_RETRY_CAP")},
	}
	c.Tracing = tracing.Config{
		Exporter:     env.OTel("OTEL_TRACES_EXPORTER"),
		Protocol:     cmp.Or(env.OTel("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), env.OTel("OTEL_EXPORTER_OTLP_PROTOCOL")),
		OTLPEndpoint: cmp.Or(env.OTel("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), env.OTel("OTEL_EXPORTER_OTLP_ENDPOINT")),
		Disabled:     strings.EqualFold(env.OTel("OTEL_SDK_DISABLED"), "true"),
	}
	add(c.Tracing.Validate())
	if _, err := newRedisClient(c.RedisURL); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// parseTenantBuckets reads CROPQ_TENANT_BUCKETS: tenant=bucket|bucket
// entries, comma-separated, each tenant once.
func parseTenantBuckets(s string) (map[string][]string, error) {
	return parseTenantMap("CROPQ_TENANT_BUCKETS", s, "tenant=bucket|bucket entries, comma-separated, such as acme=acme-crops|acme-media,globex=globex-crops",
		func(list string) ([]string, string) {
			var out []string
			for _, b := range strings.Split(list, "|") {
				b = strings.TrimSpace(b)
				if tasks.ValidateBucket(b) != nil {
					return nil, "valid S3 bucket names after =, separated by |"
				}
				out = append(out, b)
			}
			return out, ""
		})
}

// parseUrgentShare reads CROPQ_URGENT_SHARE: a fraction in (0, 1].
func parseUrgentShare(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || !(v > 0 && v <= 1) {
		return 0, envError("CROPQ_URGENT_SHARE", s, "a number in (0, 1]: the part of the quota each tenant's urgent requests may take (1: no limit)")
	}
	return v, nil
}

// MaxTenantWeight bounds a weight of CROPQ_TENANT_WEIGHTS.
const MaxTenantWeight = 1000

// parseTenantWeights reads CROPQ_TENANT_WEIGHTS: tenant=weight entries,
// comma-separated, each tenant once.
func parseTenantWeights(s string) (map[string]int, error) {
	return parseTenantMap("CROPQ_TENANT_WEIGHTS", s, "tenant=weight entries, comma-separated, such as acme=3,globex=1",
		func(w string) (int, string) {
			weight, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil || weight < 1 || weight > MaxTenantWeight {
				return 0, fmt.Sprintf("a weight that is an integer from 1 to %d after =", MaxTenantWeight)
			}
			return weight, ""
		})
}

// parseTenantMap reads the variable name's tenant=value entries (form says
// how they look): comma-separated, a valid tenant before each =, each
// tenant once, each value read by parse (which gives a reason when it
// cannot). Nil when there are none.
func parseTenantMap[V any](name, s, form string, parse func(string) (V, string)) (map[string]V, error) {
	var out map[string]V
	for _, entry := range splitList(s) {
		tenant, value, ok := strings.Cut(entry, "=")
		tenant = strings.TrimSpace(tenant)
		if !ok {
			return nil, envError(name, entry, form)
		}
		if err := tasks.ValidateTenant(tenant); err != nil {
			return nil, envError(name, entry, fmt.Sprintf("a tenant of 1–%d characters of a-z 0-9 . _ - before =", tasks.MaxTenantLen))
		}
		v, reason := parse(value)
		if reason != "" {
			return nil, envError(name, entry, reason)
		}
		if _, dup := out[tenant]; dup {
			return nil, envError(name, entry, "each tenant once")
		}
		if out == nil {
			out = map[string]V{}
		}
		out[tenant] = v
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Connect loads the configuration and opens its Redis (which the caller
// closes): the start of every subcommand that reads or writes the queue.
func Connect(ctx context.Context, env Env) (Config, redis.UniversalClient, error) {
	cfg, err := LoadConfig(env)
	if err != nil {
		return Config{}, nil, err
	}
	rdb, err := OpenRedis(ctx, cfg.RedisURL)
	if err != nil {
		return Config{}, nil, err
	}
	return cfg, rdb, nil
}

const redisPingTimeout = 5 * time.Second

// OpenRedis connects to c.RedisURL and checks that it answers.
func OpenRedis(ctx context.Context, url string) (redis.UniversalClient, error) {
	rdb, err := newRedisClient(url)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, redisPingTimeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", redact.URL(url), err)
	}
	return rdb, nil
}

// newRedisClient maps CROPQ_REDIS_URL to a go-redis client (asynq's own
// ParseRedisURI reads the same forms for the web UI):
//
//	redis://[:password@]host:port/db          one server
//	rediss://…                                the same over TLS
//	redis-sentinel://[:password@]host:port,host:port/db?master=name
//	redis-cluster://[:password@]host:port,host:port   (add ?tls=true for TLS)
func newRedisClient(raw string) (redis.UniversalClient, error) {
	bad := func(why string) error { return envError("CROPQ_REDIS_URL", redact.URL(raw), why) }
	switch {
	case strings.HasPrefix(raw, "redis://"), strings.HasPrefix(raw, "rediss://"):
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, bad("a valid redis:// or rediss:// URL (" + err.Error() + ")")
		}
		return redis.NewClient(opt), nil
	case strings.HasPrefix(raw, "redis-sentinel://"):
		u, err := url.Parse(raw)
		if err != nil || u.Query().Get("master") == "" || u.Host == "" {
			return nil, bad("redis-sentinel://[:password@]host:port[,host:port…]/db?master=NAME")
		}
		db := 0
		if p := strings.Trim(u.Path, "/"); p != "" {
			if db, err = strconv.Atoi(p); err != nil {
				return nil, bad("a database number after the hosts")
			}
		}
		pw, _ := u.User.Password()
		return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: u.Query().Get("master"),
			SentinelAddrs: strings.Split(u.Host, ","), Password: pw, DB: db}), nil
	case strings.HasPrefix(raw, "redis-cluster://"):
		addrs, pw, useTLS, err := clusterURL(raw)
		if err != nil {
			return nil, bad("redis-cluster://[:password@]host:port[,host:port…][?tls=true]")
		}
		opt := &redis.ClusterOptions{Addrs: addrs, Password: pw}
		if useTLS {
			opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return redis.NewClusterClient(opt), nil
	}
	return nil, bad("a redis://, rediss://, redis-sentinel:// or redis-cluster:// URL")
}

func clusterURL(raw string) (addrs []string, password string, useTLS bool, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, "", false, fmt.Errorf("bad cluster URL")
	}
	password, _ = u.User.Password()
	return strings.Split(u.Host, ","), password, u.Query().Get("tls") == "true", nil
}

// AsynqConnOpt is CROPQ_REDIS_URL for components that open their own
// connection through asynq (the web UI).
func AsynqConnOpt(raw string) (asynq.RedisConnOpt, error) {
	if strings.HasPrefix(raw, "redis-cluster://") {
		addrs, pw, useTLS, err := clusterURL(raw)
		if err != nil {
			return nil, envError("CROPQ_REDIS_URL", redact.URL(raw), "a valid redis-cluster:// URL")
		}
		opt := asynq.RedisClusterClientOpt{Addrs: addrs, Password: pw}
		if useTLS {
			opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return opt, nil
	}
	opt, err := asynq.ParseRedisURI(raw)
	if err != nil {
		return nil, envError("CROPQ_REDIS_URL", redact.URL(raw), err.Error())
	}
	return opt, nil
}

func LogConfig(log *slog.Logger, c Config) {
	log.Info("config", "redis", redact.URL(c.RedisURL), "queue", c.Task.Queue, "api_base_url", c.API.BaseURL,
		"app_key_set", c.API.AppKey != "", "s3_endpoint", c.S3.Endpoint, "bucket", c.Storage.Bucket,
		"concurrency", c.Server.Concurrency)
}
