package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/metrics"
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
	reg := metrics.NewRegistry()
	srv, ready, err := newWorkerServer(ctx, cfg, rdb, log, reg)
	if err != nil {
		return err
	}
	// Health and metrics stay up while draining (readiness false), and stop
	// after the last task.
	stopHTTP, err := serveOps(cfg.WorkerAddr, metrics.Health{Registry: reg, Ready: ready, Draining: srv.Draining}.Handler(), log)
	if err != nil {
		return err
	}
	defer stopHTTP()
	return srv.Run(ctx)
}

// serveOps serves the health/metrics handler on addr until the returned
// function is called.
func serveOps(addr string, h http.Handler, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health/metrics listener: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health/metrics server", "err", err)
		}
	}()
	log.Info("health and metrics", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// newWorkerServer wires the handler's parts from cfg.
// With reg nil, nothing is measured. The returned check is the readiness
// of the worker's dependencies.
func newWorkerServer(ctx context.Context, cfg config, rdb redis.UniversalClient, log *slog.Logger, reg *prometheus.Registry) (*worker.Server, func(context.Context) error, error) {
	api, err := cropapi.NewClient(cfg.API)
	if err != nil {
		return nil, nil, err
	}
	s3c, err := storage.NewS3Client(ctx, cfg.S3)
	if err != nil {
		return nil, nil, fmt.Errorf("s3 client: %w", err)
	}
	copier, err := storage.New(s3c, cfg.Storage)
	if err != nil {
		return nil, nil, err
	}
	st := status.NewStore(rdb, cfg.Status)
	inputs, err := storage.NewInputs(s3c, cfg.Inputs)
	if err != nil {
		return nil, nil, err
	}
	hcfg := worker.HandlerConfig{Limits: cfg.API.Limits, Logger: log, Inputs: inputs}
	if reg != nil {
		hcfg.Metrics = metrics.NewPipeline(reg)
		metrics.RegisterQueues(reg, asynq.NewInspectorFromRedisClient(rdb))
	}
	handlers, err := webhookHandlers(cfg, log)
	if err != nil {
		return nil, nil, err
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
		limiter := quota.New(rdb, qcfg)
		hcfg.Quota = limiter
		if reg != nil {
			metrics.RegisterQuota(reg, func(ctx context.Context) (float64, float64, error) {
				st, err := limiter.State(ctx)
				return st.Effective, st.Ceiling, err
			})
		}
	}
	h := worker.NewHandler(api, copier, st, hcfg)
	cfg.Server.Logger = log
	ready := func(ctx context.Context) error {
		if err := rdb.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		if err := copier.CheckBucket(ctx); err != nil {
			return fmt.Errorf("s3 bucket: %w", err)
		}
		return nil
	}
	return worker.NewServer(rdb, cfg.Server, h), ready, nil
}
