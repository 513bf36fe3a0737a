// Command worker is a runnable example of running cropq's worker inside a
// Go program of one's own (package worker), with its hooks: a logger, a
// Prometheus registry served on /metrics, and /readyz from Ready and
// Draining. It serves until SIGINT or SIGTERM, then drains.
//
// With -url it also submits those images through the producer and stops
// once each has an outcome: a smoke test of a deployment.
//
// The app key and secret come from CROPQ_APP_KEY and CROPQ_APP_SECRET, S3's
// credentials from the AWS default chain (AWS_ACCESS_KEY_ID, …). Against
// the local stack (in another terminal: make run, which prints its Redis,
// S3 and emulator addresses and keeps serving; its app key and secret are
// dev-app-key and dev-app-secret, its S3 keys cropqdev and cropqdev-secret):
//
//	CROPQ_APP_KEY=dev-app-key CROPQ_APP_SECRET=dev-app-secret \
//	AWS_ACCESS_KEY_ID=cropqdev AWS_SECRET_ACCESS_KEY=cropqdev-secret AWS_REGION=us-east-1 \
//	go run ./examples/worker -redis redis://127.0.0.1:PORT/0 -api http://127.0.0.1:PORT \
//		-s3 http://127.0.0.1:PORT -bucket cropq -local -url https://example.com/a.jpg
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
	"github.com/cropq/cropq/worker"
)

type urls []string

func (u *urls) String() string     { return strings.Join(*u, ",") }
func (u *urls) Set(s string) error { *u = append(*u, s); return nil }

type options struct {
	redisURL, apiURL, s3Endpoint, bucket, metricsAddr string
	concurrency                                       int
	local                                             bool
	images                                            urls
}

func main() {
	var o options
	flag.StringVar(&o.redisURL, "redis", "redis://127.0.0.1:6379/0", "Redis of the cropq deployment")
	flag.StringVar(&o.apiURL, "api", cropapi.DefaultBaseURL, "Image Cropping API base URL (the emulator's locally)")
	flag.StringVar(&o.s3Endpoint, "s3", "", "S3 endpoint (empty: AWS S3; MinIO: http://host:9000)")
	flag.StringVar(&o.bucket, "bucket", "cropq", "bucket results are copied into")
	flag.StringVar(&o.metricsAddr, "metrics", "127.0.0.1:0", "address of /metrics and /readyz")
	flag.IntVar(&o.concurrency, "concurrency", 4, "crops run at once")
	flag.BoolVar(&o.local, "local", false, "the local stack only: images on private addresses, results over http from 127.0.0.1")
	flag.Var(&o.images, "url", "image URL to crop, then stop once done (repeat)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, o options) error {
	opt, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	reg := prometheus.NewRegistry()

	cfg := worker.Config{
		Redis: rdb,
		API: cropapi.Config{BaseURL: o.apiURL, AppKey: os.Getenv("CROPQ_APP_KEY"), AppSecret: os.Getenv("CROPQ_APP_SECRET"),
			Limits: cropapi.Limits{AllowPrivateHosts: o.local}},
		S3:          storage.S3Config{Endpoint: o.s3Endpoint, UsePathStyle: o.s3Endpoint != ""},
		Bucket:      o.bucket,
		Concurrency: o.concurrency,
		Logger:      logger,
		Metrics:     reg,
	}
	if o.local {
		cfg.ResultHosts, cfg.ResultAllowHTTP = []string{"127.0.0.1"}, true
	}
	w, err := worker.New(ctx, cfg)
	if err != nil {
		return err
	}

	// The program's own endpoints: metrics, and readiness that turns false
	// while the worker drains.
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		if w.Draining() {
			http.Error(rw, "draining", http.StatusServiceUnavailable)
			return
		}
		if err := w.Ready(r.Context()); err != nil {
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
	})
	ln, err := net.Listen("tcp", o.metricsAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	logger.Info("metrics and readiness", "addr", ln.Addr().String())

	runCtx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	if len(o.images) > 0 {
		err := smoke(ctx, rdb, o)
		stopWorker() // the worker drains, then Run returns
		return errors.Join(err, <-done)
	}
	return <-done
}

// smoke submits o.images and waits until each has an outcome, printing it.
func smoke(ctx context.Context, rdb redis.UniversalClient, o options) error {
	p := producer.New(rdb, producer.Config{Backlog: true, Task: tasks.Options{Limits: cropapi.Limits{AllowPrivateHosts: o.local}}})
	defer p.Close()
	batch := fmt.Sprintf("worker-example-%d", time.Now().UnixNano())
	var ids []string
	for i, u := range o.images {
		res := p.Enqueue(ctx, tasks.Request{RequestID: fmt.Sprintf("%s-%d", batch, i), ImageURL: u, Params: tasks.Params{TargetWidth: 300, TargetHeight: 300, BatchID: batch}})
		if res.Err != nil {
			return fmt.Errorf("enqueue %s: %w", u, res.Err)
		}
		ids = append(ids, res.RequestID)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for _, id := range ids {
		for {
			rec, err := p.Get(ctx, id)
			if err != nil {
				return err
			}
			if rec.State.Terminal() {
				where := rec.ErrorCode
				if rec.Stored != nil {
					where = rec.Stored.Bucket + "/" + rec.Stored.Key
				}
				fmt.Printf("%s %s %s\n", id, rec.State, where)
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for %s: %w", id, ctx.Err())
			case <-tick.C:
			}
		}
	}
	return nil
}
