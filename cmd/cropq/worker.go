package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/quota"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/webhook"
	"github.com/cropq/cropq/worker"
)

// parseFlags parses args into fs, printing errors and help to stderr.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func runWorker(ctx context.Context, env Env, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq worker", flag.ContinueOnError)
	concurrency := fs.Int("concurrency", 0, "tasks run at once (default CROPQ_CONCURRENCY)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq worker [--concurrency N]\n\nProcesses crop tasks until SIGTERM/SIGINT, then drains for CROPQ_SHUTDOWN_TIMEOUT.\nConfiguration: see 'cropq env'.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	if *concurrency > 0 {
		cfg.Server.Concurrency = *concurrency
	}
	log := newLogger(env, stderr)
	logConfig(log, cfg)

	rdb, err := openRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	srv, err := newWorkerServer(ctx, cfg, rdb, log)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// newWorkerServer wires the handler's parts from cfg.
func newWorkerServer(ctx context.Context, cfg config, rdb redis.UniversalClient, log *slog.Logger) (*worker.Server, error) {
	api, err := cropapi.NewClient(cfg.API)
	if err != nil {
		return nil, err
	}
	s3c, err := storage.NewS3Client(ctx, cfg.S3)
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	copier, err := storage.New(s3c, cfg.Storage)
	if err != nil {
		return nil, err
	}
	st := status.NewStore(rdb, cfg.Status)
	inputs, err := storage.NewInputs(s3c, cfg.Inputs)
	if err != nil {
		return nil, err
	}
	hcfg := worker.HandlerConfig{Limits: cfg.API.Limits, Logger: log, Inputs: inputs}
	handlers, err := webhookHandlers(cfg, log)
	if err != nil {
		return nil, err
	}
	if handlers != nil {
		hcfg.Notifier = webhookNotifier{client: asynq.NewClientFromRedisClient(rdb)}
		cfg.Server.Handlers = handlers
		// Crops first; callbacks are small and wait little.
		cfg.Server.Queues = map[string]int{cfg.Task.Queue: 4, webhook.DefaultQueue: 1}
	}
	if cfg.QuotaShared {
		qcfg := cfg.Quota
		qcfg.Logger = log
		hcfg.Quota = quota.New(rdb, qcfg)
	}
	h := worker.NewHandler(api, copier, st, hcfg)
	cfg.Server.Logger = log
	return worker.NewServer(rdb, cfg.Server, h), nil
}
