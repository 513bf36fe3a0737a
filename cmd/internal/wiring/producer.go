package wiring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/delivery"
	"github.com/cropq/cropq/internal/manifest"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/webhook"
)

// NewProducer wires the producer library from cfg, with the claim-check
// store on the configured S3; log may be nil.
func NewProducer(ctx context.Context, cfg Config, rdb redis.UniversalClient, log *slog.Logger) (*producer.Producer, error) {
	inputs, err := NewInputs(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s3c, err := storage.NewS3Client(ctx, cfg.S3)
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	pcfg := producer.Config{Task: cfg.Task, Status: cfg.Status, Inputs: inputs,
		ClaimCheckBytes: cfg.ClaimCheckBytes, Concurrency: cfg.EnqueueWorkers, Logger: log, Backlog: true,
		Weights: cfg.TenantWeights, Rate: FleetRate(cfg, rdb),
		Manifests: manifest.S3{Client: s3c}, ReadWalls: cfg.Storage.Walls, TracerProvider: cfg.TracerProvider}
	if len(cfg.Budget.Caps) > 0 {
		pcfg.Budgets = budget.New(rdb, cfg.Budget)
	}
	if cfg.WebhookSecret != "" {
		// As in the worker: callbacks are enqueued only where workers can
		// sign and deliver them.
		pcfg.Notifier = webhookNotifier{client: asynq.NewClientFromRedisClient(rdb)}
	}
	return producer.New(rdb, pcfg), nil
}

// FleetRate reads the fleet's effective API call rate: the shared
// limiter's (adapted to rate-limit answers), or the configured ceiling when
// the quota is not shared.
func FleetRate(cfg Config, rdb redis.UniversalClient) func(context.Context) (float64, error) {
	if !cfg.QuotaShared {
		return func(context.Context) (float64, error) { return cfg.Quota.Rate, nil }
	}
	limiter := quota.New(rdb, cfg.Quota)
	return func(ctx context.Context) (float64, error) {
		st, err := limiter.State(ctx)
		return st.Effective, err
	}
}

// ErrRedisRefusesWrites is a Redis that answers reads but refuses writes:
// at its maxmemory with the noeviction policy (OOM), or a read-only replica.
var errRedisRefusesWrites = errors.New("redis refuses writes (OOM or read-only): raise maxmemory or fix the topology; nothing can be queued or recorded")

// RedisWritable reports whether Redis takes a write, with a tiny key that
// expires on its own: reads alone (PING) say nothing of an OOM.
func RedisWritable(ctx context.Context, cfg Config, rdb redis.UniversalClient) error {
	host, _ := os.Hostname()
	err := rdb.Set(ctx, rediskey.Prefix(cfg.Status.Prefix).Writable(host), "1", 30*time.Second).Err()
	switch {
	case err == nil:
		return nil
	case redis.HasErrorPrefix(err, "OOM"), redis.HasErrorPrefix(err, "READONLY"):
		return fmt.Errorf("%w: %w", errRedisRefusesWrites, err)
	default:
		return fmt.Errorf("redis: %w", err)
	}
}

// NewBacklog is where accepted requests wait for the feeder.
func NewBacklog(cfg Config, rdb redis.UniversalClient) *backlog.Backlog {
	return backlog.New(rdb, backlog.Config{Prefix: cfg.Status.Prefix})
}

func NewInputs(ctx context.Context, cfg Config) (*storage.Inputs, error) {
	s3c, err := storage.NewS3Client(ctx, cfg.S3)
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	return storage.NewInputs(s3c, cfg.Inputs)
}

// webhookNotifier enqueues a callback delivery task for a terminal state
// (the worker's Notifier).
type webhookNotifier struct {
	client *asynq.Client
}

func (n webhookNotifier) Notify(ctx context.Context, callbackURL string, rec status.Record) error {
	ev := webhook.Event{RequestID: rec.RequestID, BatchID: rec.BatchID, State: string(rec.State),
		ErrorCode: rec.ErrorCode, ErrorMessage: rec.ErrorMessage, At: rec.UpdatedAt}
	if rec.Stored != nil {
		ev.Bucket, ev.Key = rec.Stored.Bucket, rec.Stored.Key
	}
	task, opts, err := delivery.NewTask(callbackURL, ev, delivery.Options{Traceparent: tracing.Traceparent(ctx)})
	if err != nil {
		return err
	}
	if _, err := n.client.EnqueueContext(ctx, task, opts...); err != nil && err != asynq.ErrTaskIDConflict {
		return fmt.Errorf("enqueue callback: %w", err)
	}
	return nil
}

// webhookHandlers returns the worker's extra handler and queue for callback
// deliveries, or nothing (with a warning) when no secret is configured.
func webhookHandlers(cfg Config, log *slog.Logger) (map[string]asynq.Handler, error) {
	if cfg.WebhookSecret == "" {
		log.Warn("worker: CROPQ_WEBHOOK_SECRET is not set: callbackUrl of requests is not called")
		return nil, nil
	}
	d, err := delivery.NewDeliverer(delivery.Config{Secret: []byte(cfg.WebhookSecret), Allow: cfg.WebhookAllow,
		Timeout: cfg.WebhookTimeout, Logger: log, TracerProvider: cfg.TracerProvider})
	if err != nil {
		return nil, err
	}
	return map[string]asynq.Handler{delivery.TypeDeliver: d}, nil
}
