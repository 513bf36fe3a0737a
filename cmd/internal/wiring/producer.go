package wiring

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/delivery"
	"github.com/cropq/cropq/internal/manifest"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/storage"
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
		Weights: cfg.TenantWeights, Rate: quota.FleetRate(rdb, cfg.Quota, cfg.QuotaShared),
		Manifests: manifest.S3{Client: s3c}, ReadWalls: cfg.Storage.Walls, TracerProvider: cfg.TracerProvider}
	if len(cfg.Budget.Caps) > 0 {
		pcfg.Budgets = budget.New(rdb, cfg.Budget)
	}
	if cfg.WebhookSecret != "" {
		// As in the worker: callbacks are enqueued only where workers can
		// sign and deliver them.
		pcfg.Notifier = delivery.Notifier{Client: asynq.NewClientFromRedisClient(rdb)}
	}
	return producer.New(rdb, pcfg), nil
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
