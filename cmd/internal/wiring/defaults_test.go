package wiring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// Defaults live once, in the packages: an unset variable gives exactly the
// package's own default, through the env table and the parsing both.
func TestUnsetVariablesGiveThePackagesDefaults(t *testing.T) {
	cfg, err := LoadConfig(MapEnv(map[string]string{"CROPQ_API_TOKENS": "t"}))
	require.NoError(t, err)
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"CROPQ_KEY_PREFIX", cfg.Status.Prefix, status.DefaultPrefix},
		{"CROPQ_STATUS_TTL", cfg.Status.TTL, status.DefaultTTL},
		{"CROPQ_QUEUE", cfg.Task.Queue, tasks.DefaultQueue},
		{"CROPQ_MAX_RETRY", cfg.Task.MaxRetry, tasks.DefaultMaxRetry},
		{"CROPQ_TASK_TIMEOUT", cfg.Task.Timeout, tasks.DefaultTimeout},
		{"CROPQ_RETENTION", cfg.Task.Retention, tasks.DefaultRetention},
		{"CROPQ_CONCURRENCY", cfg.Server.Concurrency, worker.DefaultConcurrency},
		{"CROPQ_SHUTDOWN_TIMEOUT", cfg.Server.ShutdownTimeout, worker.DefaultShutdownTimeout},
		{"CROPQ_RETRY_BASE", cfg.Server.Backoff.Base, worker.DefaultRetryBase},
		{"CROPQ_RETRY_CAP", cfg.Server.Backoff.Cap, worker.DefaultRetryCap},
		{"CROPQ_FEED_LEAD", cfg.FeedLead, backlog.DefaultLead},
		{"CROPQ_MANIFEST_TARGET", cfg.ManifestTarget, manifest.DefaultTarget},
		{"CROPQ_URGENT_SHARE", cfg.UrgentShare, backlog.DefaultUrgentShare},
		{"CROPQ_LEASE_TTL", cfg.Lease.TTL, lease.DefaultTTL},
		{"CROPQ_DEDUP_TTL", cfg.Dedup.TTL, dedup.DefaultTTL},
		{"CROPQ_API_BASE_URL", cfg.API.BaseURL, cropapi.DefaultBaseURL},
		{"CROPQ_API_TIMEOUT", cfg.API.Timeout, cropapi.DefaultTimeout},
		{"CROPQ_KEY_TEMPLATE", cfg.Storage.KeyTemplate, objectkey.DefaultTemplate},
		{"CROPQ_MAX_RESULT_BYTES", cfg.Storage.MaxDownloadBytes, int64(results.DefaultMaxDownloadBytes)},
		{"CROPQ_INPUTS_PREFIX", cfg.Inputs.Prefix, storage.DefaultInputsPrefix},
		{"CROPQ_CLAIM_CHECK_BYTES", cfg.ClaimCheckBytes, producer.DefaultClaimCheckBytes},
		{"CROPQ_WEBHOOK_TIMEOUT", cfg.WebhookTimeout, delivery.DefaultDeliveryTimeout},
		{"CROPQ_API_MAX_BATCH", cfg.HTTP.MaxBatch, httpapi.DefaultMaxBatch},
		{"CROPQ_API_MAX_BODY_BYTES", cfg.HTTP.MaxBodyBytes, int64(httpapi.DefaultMaxBodyBytes)},
		{"CROPQ_API_MAX_BATCH_BODY_BYTES", cfg.HTTP.MaxBatchBodyBytes, int64(httpapi.DefaultMaxBatchBodyBytes)},
		{"CROPQ_API_MAX_INFLIGHT_BYTES", cfg.HTTP.MaxInflightBytes, int64(httpapi.DefaultMaxInflightBytes)},
		{"CROPQ_API_METRICS_ADDR", cfg.APIMetricsAddr, ""}, // off: /metrics only with an operator's token
	} {
		assert.Equal(t, tc.want, tc.got, tc.name)
	}
}

func TestShortDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		168 * time.Hour: "168h", 5 * time.Minute: "5m", 25 * time.Second: "25s", 10 * time.Second: "10s",
		90 * time.Minute: "1h30m", time.Minute + 500*time.Millisecond: "1m0.5s", 0: "0s",
	} {
		assert.Equal(t, want, shortDur(d), d.String())
	}
}
