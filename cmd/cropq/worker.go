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

	"github.com/cropq/cropq/cmd/internal/wiring"
	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/worker"
)

func runWorker(ctx context.Context, env wiring.Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq worker", flag.ContinueOnError)
	concurrency := fs.Int("concurrency", 0, "tasks run at once (default CROPQ_CONCURRENCY)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq worker [--concurrency N]\n\nProcesses crop tasks until SIGTERM/SIGINT, then drains for CROPQ_SHUTDOWN_TIMEOUT.\nConfiguration: see 'cropq env'.")
		fs.PrintDefaults()
	}
	if err := wiring.ParseFlags(fs, args, stderr); err != nil {
		return err
	}
	cfg, err := wiring.LoadConfig(env)
	if err != nil {
		return err
	}
	if *concurrency > 0 {
		cfg.Server.Concurrency = *concurrency
	}
	log := wiring.NewLogger(env, stderr)
	tp, log, err := wiring.StartTracing(ctx, &cfg, "cropq-worker", stdout, log)
	if err != nil {
		return err
	}
	defer func() {
		// After the drain: the last attempts' spans are flushed.
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("worker: tracing", "err", err)
		}
	}()
	wiring.LogConfig(log, cfg)

	rdb, err := wiring.OpenRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	reg := metrics.NewRegistry()
	w, err := worker.New(ctx, wiring.WorkerConfig(cfg, rdb, log, reg))
	if err != nil {
		return wiring.EnvContext(err)
	}
	// Health and metrics stay up while draining (readiness false), and stop
	// after the last task.
	stopHTTP, err := serveOps(cfg.WorkerAddr, metrics.Health{Registry: reg, Ready: w.Ready, Draining: w.Draining}.Handler(), log)
	if err != nil {
		return err
	}
	defer stopHTTP()
	return w.Run(ctx)
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
