package worker_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/worker"
)

// A program of one's own runs the worker until SIGTERM, then drains; its
// metrics land in the program's registry (served wherever it serves them).
// examples/worker is the whole program, with /metrics and /readyz.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	reg := prometheus.NewRegistry()

	w, err := worker.New(ctx, worker.Config{
		Redis:       rdb,
		API:         cropapi.Config{AppKey: os.Getenv("CROPQ_APP_KEY"), AppSecret: os.Getenv("CROPQ_APP_SECRET")},
		Bucket:      "crops",
		Concurrency: 16,
		Logger:      slog.Default(),
		Metrics:     reg,
	})
	if err != nil {
		slog.Error("worker", "err", err)
		return
	}
	if err := w.Run(ctx); err != nil {
		slog.Error("worker", "err", err)
	}
}
