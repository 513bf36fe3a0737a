package wiring

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/delivery"
	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/manifest"
	"github.com/cropq/cropq/internal/objectkey"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

// EnvVar is one environment variable cropq reads.
type EnvVar struct {
	Name, Default, Help string
	Secret              bool
}

// EnvVars is every environment variable cropq reads: Env.Get refuses any
// other name, so this table (printed by 'cropq env' and in the README) is
// complete by construction.
func EnvVars() []EnvVar {
	return []EnvVar{
		{"CROPQ_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for queues, status and quota: redis://, rediss:// (TLS), redis-sentinel://[:pw@]h:p,h:p/db?master=NAME or redis-cluster://[:pw@]h:p,h:p", false},
		{"CROPQ_KEY_PREFIX", status.DefaultPrefix, "prefix of cropq's own Redis keys (asynq's are asynq:{queue}:…)", false},
		{"CROPQ_STATUS_TTL", shortDur(status.DefaultTTL), "how long a status record lives once its request finished (succeeded, failed, canceled), and a batch's counts once its last request did; nothing expires while it waits", false},
		{"CROPQ_QUEUE", tasks.DefaultQueue, "queue crop tasks go to and workers read", false},
		{"CROPQ_MAX_RETRY", strconv.Itoa(tasks.DefaultMaxRetry), "failed attempts before a task is archived (rate limits do not count)", false},
		{"CROPQ_TASK_TIMEOUT", shortDur(tasks.DefaultTimeout), "time limit of one attempt", false},
		{"CROPQ_RETENTION", shortDur(tasks.DefaultRetention), "how long a finished task is kept (its request id is refused meanwhile)", false},
		{"CROPQ_CONCURRENCY", strconv.Itoa(worker.DefaultConcurrency), "tasks one worker process runs at once", false},
		{"CROPQ_SHUTDOWN_TIMEOUT", shortDur(worker.DefaultShutdownTimeout), "grace given to running tasks on SIGTERM", false},
		{"CROPQ_RETRY_BASE", shortDur(worker.DefaultRetryBase), "upper bound of the first retry delay (exponential, full jitter)", false},
		{"CROPQ_RETRY_CAP", shortDur(worker.DefaultRetryCap), "largest retry delay", false},
		{"CROPQ_DELAYED_CHECK_INTERVAL", "5s", "how often asynq moves due retries back to pending", false},
		{"CROPQ_QUOTA_SHARED", "true", "take a token from the fleet-wide limiter in Redis before each API call (false: each worker only backs off on rate-limit answers)", false},
		{"CROPQ_QUOTA_RATE", "5", "API calls per second for the whole fleet and account: the ceiling (the vendor's default quota is 5)", false},
		{"CROPQ_QUOTA_BURST", "2", "API calls the limiter lets through at once (2 makes up a token the fleet was a few ms late for)", false},
		{"CROPQ_QUOTA_MAX_WAIT", "5s", "longest a worker waits in place for a token before handing the task back (not a failure)", false},
		{"CROPQ_QUOTA_ADAPTIVE", "true", "lower the shared rate on rate-limit answers, raise it back while calls succeed (AIMD)", false},
		{"CROPQ_QUOTA_MIN_RATE", "0", "floor of the adapted rate (0: a twentieth of CROPQ_QUOTA_RATE)", false},
		{"CROPQ_FEED_LEAD", shortDur(backlog.DefaultLead), "seconds of API calls, at the effective rate, the feeder keeps in asynq ahead of the workers: what an urgent request may wait behind", false},
		{"CROPQ_MANIFEST_TARGET", strconv.Itoa(manifest.DefaultTarget), "requests of each manifest batch the feeder's leader keeps created and queued, reading its manifest as they drain (see docs/manifests.md): Redis holds about this many per batch being read, never the whole manifest", false},
		{"CROPQ_LEASE_TTL", shortDur(lease.DefaultTTL), "lease of each running crop, renewed every fifth of it: a killed or frozen worker's crops run again on another worker about this long after it stopped (at least 1s)", false},
		{"CROPQ_CLOCK_OFFSET", "0s", "fault injection: move this process's wall clock (record times, API signatures, expiry bookkeeping) by a signed duration, e.g. 10m or -10m, to try a worker whose clock is off; asynq's own bookkeeping keeps the system clock", false},
		{"CROPQ_URGENT_SHARE", strconv.FormatFloat(backlog.DefaultUrgentShare, 'g', -1, 64), "part of the quota each tenant's urgent requests may take while other tenants have urgent or normal work, in (0, 1], scaled by its weight over the mean: beyond it they are served as normal (their record says servedAs normal); 1: no limit", false},
		{"CROPQ_TENANT_WEIGHTS", "", "shares of the quota among tenants with work in the same lane: tenant=weight,… with weights 1–1000, e.g. acme=3,globex=1 (unlisted tenants weigh 1)", false},
		{"CROPQ_TENANT_BUDGETS", "", "a hard cap on each tenant's paid API calls per UTC period, fleet-wide: tenant=calls/period,… with periods hour, day or month, e.g. acme=50000/day,globex=2000000/month (unlisted tenants: no cap); work over budget waits, queued, for the next period", false},
		{"CROPQ_BUDGET_CLOCK_OFFSET", "0s", "fault injection: move the clock of the budgets' periods only (not signatures or records), e.g. 24h, to try a period rolling over", false},
		{"CROPQ_DEDUP_SCOPE", "tenant", "reuse the stored result of the same crop (image and size) instead of paying again, and let twins in flight make one call: tenant (within a tenant), global (across tenants) or off", false},
		{"CROPQ_DEDUP_TTL", shortDur(dedup.DefaultTTL), "how long a stored result stays reusable (its index entry in Redis)", false},
		{"CROPQ_DEDUP_SOURCE", string(dedup.SourceValidators), "what makes a URL image the same before its stored result is reused: validators (the origin's ETag/Last-Modified, revalidated with one conditional request per reuse; the bytes' digest where the origin gives none), bytes (download and hash every request) or url (the URL's text alone: only for immutable, content-addressed URLs)", false},
		{"CROPQ_FREE_WINDOW", "auto", "tasks the feeder keeps in the crops-free queue (CROPQ_QUEUE + -free): requests whose crop is already stored, which take no quota token and do not wait in the quota's window; auto: 4 × CROPQ_CONCURRENCY; off: they go through the paid window like any other (as before)", false},
		{"CROPQ_DEDUP_FETCH", "false", "alias of CROPQ_DEDUP_SOURCE=bytes: download a URL image before paying and key it by its bytes, which also catches the same image under different URLs (one download per request)", false},
		{"CROPQ_API_BASE_URL", cropapi.DefaultBaseURL, "Image Cropping API base URL (cn-api.aidc-ai.com for China accounts; the emulator's URL locally)", false},
		{"CROPQ_APP_KEY", "", "API app key", false},
		{"CROPQ_APP_SECRET", "", "API app secret (never logged)", true},
		{"CROPQ_API_TRIAL", "false", "send x-iop-trial: true (draw on the free trial quota)", false},
		{"CROPQ_ALLOW_PRIVATE_IMAGE_URLS", "false", "accept imageUrl on localhost or private addresses (only with the local emulator)", false},
		{"CROPQ_API_TIMEOUT", shortDur(cropapi.DefaultTimeout), "time limit of one API call", false},
		{"CROPQ_S3_ENDPOINT", "", "S3 endpoint; empty = AWS S3 (MinIO: http://host:9000)", false},
		{"CROPQ_S3_BUCKET", "cropq", "bucket results are copied into", false},
		{"CROPQ_S3_PATH_STYLE", "auto", "path-style addressing: true, false, or auto (true when CROPQ_S3_ENDPOINT is set)", false},
		{"CROPQ_KEY_TEMPLATE", objectkey.DefaultTemplate, "S3 key of a result; placeholders {requestId} {width} {height} {ext} {date}", false},
		{"CROPQ_MAX_RESULT_BYTES", strconv.Itoa(results.DefaultMaxDownloadBytes), "largest result download accepted", false},
		{"CROPQ_RESULT_HOSTS", "*.aliyuncs.com", "hosts result URLs may be downloaded from (comma-separated, *.suffix allowed; the vendor's OSS domains)", false},
		{"CROPQ_RESULT_ALLOW_HTTP", "false", "accept http:// result URLs (only for the local emulator)", false},
		{"CROPQ_MULTIPART_UPLOADS", "1", "results over 5 MiB copied at once per worker process; each costs ~15 MiB of RSS", false},
		{"CROPQ_TENANT_BUCKETS", "", "buckets each tenant may name besides the default one: tenant=bucket|bucket,… such as acme=acme-crops|acme-media (a bucket belongs to one tenant; in the default bucket a tenant writes under tenants/TENANT/ only)", false},
		{"CROPQ_INPUTS_BUCKET", "", "bucket of claim-checked source images (empty: CROPQ_S3_BUCKET)", false},
		{"CROPQ_INPUTS_PREFIX", storage.DefaultInputsPrefix, "key prefix of claim-checked source images (give it a lifecycle rule)", false},
		{"CROPQ_CLAIM_CHECK_BYTES", strconv.Itoa(producer.DefaultClaimCheckBytes), "base64 images longer than this go to S3, not into Redis (0: default)", false},
		{"CROPQ_ENQUEUE_CONCURRENCY", "16", "enqueues in flight per batch (bulk enqueue, HTTP batch)", false},
		{"CROPQ_WEBHOOK_SECRET", "", "HMAC key of callback signatures; empty: callbackUrl is not called", true},
		{"CROPQ_WEBHOOK_ALLOW", "", "comma-separated CIDR prefixes callbacks may reach although private or loopback", false},
		{"CROPQ_WEBHOOK_TIMEOUT", shortDur(delivery.DefaultDeliveryTimeout), "time limit of one callback delivery", false},
		{"CROPQ_API_ADDR", ":8080", "listen address of cropq api", false},
		{"CROPQ_API_TOKENS", "", "comma-separated bearer tokens accepted by cropq api (required there): tenant:token gives the token's requests that tenant (a-z 0-9 . _ -), a bare token (no ':') is tenant default, the operators'; each at least " + strconv.Itoa(httpapi.MinTokenLength) + " characters and of one tenant; a malformed entry stops cropq api", true},
		{"CROPQ_API_METRICS_ADDR", "", "listen address of cropq api's /metrics, /readyz and /healthz without a token, for the cluster's scraper (keep it cluster-internal); empty: /metrics only on CROPQ_API_ADDR with an operator's token", false},
		{"CROPQ_API_MAX_BATCH", strconv.Itoa(httpapi.DefaultMaxBatch), "most items in one POST /v1/crops/batch", false},
		{"CROPQ_API_MAX_BODY_BYTES", strconv.Itoa(httpapi.DefaultMaxBodyBytes), "largest body of one crop (POST /v1/crops): a 32 MiB base64 image and 2 MiB more", false},
		{"CROPQ_API_MAX_BATCH_BODY_BYTES", strconv.Itoa(httpapi.DefaultMaxBatchBodyBytes), "largest body of a batch (POST /v1/crops/batch)", false},
		{"CROPQ_API_MAX_INFLIGHT_BYTES", strconv.Itoa(httpapi.DefaultMaxInflightBytes), "request bodies cropq api handles at once, in bytes (each costs about 3× its size in memory); more wait, then get 503", false},
		{"CROPQ_WORKER_ADDR", ":9090", "a worker's /healthz, /readyz (false while draining) and /metrics", false},
		{"CROPQ_MONITOR_READONLY", "true", "asynq web UI at /monitoring in cropq api: no retry/delete/archive actions unless false", false},
		{"CROPQ_MONITOR_AUTH", "true", "the web UI needs the API's credentials (a token as Basic password or Bearer); false only for local dev", false},
		{"CROPQ_PROMETHEUS_URL", "", "Prometheus the web UI queries for its metrics charts (empty: charts off)", false},
		{"AWS_REGION", "us-east-1", "S3 region", false},
		{"AWS_ACCESS_KEY_ID", "", "S3 access key; empty = the AWS default credentials chain", false},
		{"AWS_SECRET_ACCESS_KEY", "", "S3 secret key (never logged)", true},
		{"CROPQ_LOG_FORMAT", "json", "json or text", false},
		{"CROPQ_LOG_LEVEL", "info", "debug, info, warn or error", false},
	}
}

// Env reads configuration from the environment, with the table's defaults.
type Env struct {
	lookup func(string) (string, bool)
}

// OSEnv reads the process environment.
func OSEnv() Env { return Env{lookup: os.LookupEnv} }

// MapEnv reads m (tests).
func MapEnv(m map[string]string) Env {
	return Env{lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

// Get returns the variable's value, or its default when unset or empty.
func (e Env) Get(name string) string {
	for _, v := range EnvVars() {
		if v.Name != name {
			continue
		}
		if val, ok := e.lookup(name); ok && val != "" {
			return val
		}
		return v.Default
	}
	panic("cropq: undocumented environment variable " + name)
}

// Secret returns a secret variable's value, read from the file named by
// NAME_FILE when that is set (a mounted Kubernetes or Docker secret), so the
// secret need not sit in the environment.
func (e Env) Secret(name string) (string, error) {
	if path, ok := e.lookup(name + "_FILE"); ok && path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s_FILE: %w", name, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return e.Get(name), nil
}

// OTelVars are the standard OpenTelemetry variables that configure
// cropq's tracing (docs/tracing.md): cropq reads the first five to decide
// whether tracing is on and with which exporter; the SDK and the OTLP
// exporter read the others from the process environment themselves. They
// are OpenTelemetry's, documented there, not in cropq's table.
func OTelVars() []string {
	return []string{
		"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SDK_DISABLED",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT",
		"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_EXPORT_TIMEOUT",
	}
}

// OTel returns one of OTelVars ("" when unset).
func (e Env) OTel(name string) string {
	if !slices.Contains(OTelVars(), name) {
		panic("cropq: not a listed OpenTelemetry variable " + name)
	}
	v, _ := e.lookup(name)
	return strings.TrimSpace(v)
}

// IsSet reports whether the variable was given.
func (e Env) IsSet(name string) bool {
	_ = e.Get(name) // documented?
	v, ok := e.lookup(name)
	return ok && v != ""
}

// envError names the variable whose value is wrong.
func envError(name, val, want string) error {
	return fmt.Errorf("%s=%q: want %s", name, val, want)
}

func (e Env) Int(name string) (int, error) {
	s := e.Get(name)
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, envError(name, s, "an integer")
	}
	return v, nil
}

func (e Env) Duration(name string) (time.Duration, error) {
	s := e.Get(name)
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, envError(name, s, "a duration such as 30s or 5m")
	}
	return v, nil
}

func (e Env) Float(name string) (float64, error) {
	s := e.Get(name)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, envError(name, s, "a non-negative number")
	}
	return v, nil
}

func (e Env) Bool(name string) (bool, error) {
	s := e.Get(name)
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, envError(name, s, "true or false")
	}
	return v, nil
}

// EnvMarkdown is the README's configuration table (a test keeps them equal).
func EnvMarkdown() string {
	var b strings.Builder
	b.WriteString("Every secret (marked 🔒) can instead be read from a file: set `NAME_FILE` to its path.\n\n")
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	for _, v := range EnvVars() {
		def := "`" + v.Default + "`"
		if v.Default == "" {
			def = "(empty)"
		}
		lock := ""
		if v.Secret {
			lock = " 🔒"
		}
		fmt.Fprintf(&b, "| `%s`%s | %s | %s |\n", v.Name, lock, def, strings.ReplaceAll(v.Help, "|", "\\|"))
	}
	return b.String()
}

// EnvContext names the environment variable behind a library's
// configuration error: the libraries name their Config fields, only cmd
// knows where those come from.
func EnvContext(err error) error {
	for _, m := range []struct {
		target error
		name   string
	}{
		{cropapi.ErrNoAppKey, "CROPQ_APP_KEY"},
		{cropapi.ErrNoAppSecret, "CROPQ_APP_SECRET"},
		{results.ErrNoBucket, "CROPQ_S3_BUCKET"},
	} {
		if errors.Is(err, m.target) {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	if errors.As(err, new(*httpapi.TokensError)) {
		return fmt.Errorf("CROPQ_API_TOKENS: %w", err)
	}
	return err
}

// shortDur writes a default duration the way people type it: 168h, 5m, 25s.
func shortDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
