package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/cropq/cropq/storage"
)

// tracingRounds alternates the runs with tracing off and on, so that a
// drift of the shared machine hits both alike; each side's median counts.
const tracingRounds = 3

// benchTracing compares the pipeline's throughput (in-process S3, the
// faster and so the more sensitive variant) with tracing on, every span
// sampled and exported over OTLP/HTTP to an endpoint in this process that
// discards them, against tracing off, in this run: target ≤ 2 % fewer
// crops per second.
func benchTracing(ctx context.Context, env *benchEnv, o options, log *slog.Logger) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 4 * o.concurrency})
	defer rdb.Close()
	fake := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	defer fake.Close()
	s3cfg := storage.S3Config{Endpoint: fake.URL, UsePathStyle: true, AccessKeyID: "bench", SecretAccessKey: "bench-secret"}

	var exported atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		exported.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer sink.Close()
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(sink.URL+"/v1/traces"))
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer func() { _ = tp.Shutdown(context.WithoutCancel(ctx)) }()

	off, err := newPipelineRig(ctx, s3cfg, rdb, log, nil)
	if err != nil {
		return nil, err
	}
	defer off.close()
	on, err := newPipelineRig(ctx, s3cfg, rdb, log, tp)
	if err != nil {
		return nil, err
	}
	defer on.close()
	for _, p := range []*pipelineRig{off, on} {
		if _, err := p.run(ctx, o.concurrency, 200, "warm"); err != nil {
			return nil, err
		}
	}
	var offRates, onRates []float64
	for i := range tracingRounds {
		for _, v := range []struct {
			rig   *pipelineRig
			rates *[]float64
		}{{off, &offRates}, {on, &onRates}} {
			res, err := v.rig.run(ctx, o.concurrency, o.tasks, fmt.Sprintf("r%d", i))
			if err != nil {
				return nil, err
			}
			*v.rates = append(*v.rates, res.perSecond)
		}
	}
	if err := tp.ForceFlush(ctx); err != nil {
		return nil, fmt.Errorf("flush spans: %w", err)
	}
	offMed, onMed := median(offRates), median(onRates)
	ratio := onMed / offMed
	return []row{
		{"tracing", fmt.Sprintf("pipeline, tracing off (baseline), in-process S3, c=%d, median of %d", o.concurrency, tracingRounds), fmt.Sprintf("%.0f images/s", offMed), "1.00", "", ""},
		{"tracing", fmt.Sprintf("pipeline, tracing on: 100 %% sampled, OTLP/HTTP to a discarding endpoint, %.0f KB exported", float64(exported.Load())/1000), fmt.Sprintf("%.0f images/s", onMed), fmt.Sprintf("%.3f", ratio), "≥ 0.98", verdict(ratio >= 0.98)},
	}, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
