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
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/cropq/cropq/storage"
)

// tracingRounds alternates the runs with tracing off and on, so that a
// drift of the shared machine hits both alike; each side's median counts.
const tracingRounds = 5

// warm is the tasks of each rig's first run, not measured.
const warm = 200

// benchTracing compares the pipeline's throughput (in-process S3, the
// faster and so the more sensitive variant) with tracing on, every span
// sampled and exported over OTLP/HTTP to an endpoint in this process that
// discards them, against tracing off, in this run: target ≤ 2 % fewer
// crops per second.
func benchTracing(ctx context.Context, env *benchEnv, o options, log *slog.Logger) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 4 * o.concurrency})
	defer rdb.Close()
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	// One in-process S3 server per rig: each creates its bucket.
	s3cfg := func() storage.S3Config {
		fake := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
		closers = append(closers, fake.Close)
		return storage.S3Config{Endpoint: fake.URL, UsePathStyle: true, AccessKeyID: "bench", SecretAccessKey: "bench-secret"}
	}

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

	off, err := newPipelineRig(ctx, s3cfg(), rdb, log, nil)
	if err != nil {
		return nil, err
	}
	defer off.close()
	on, err := newPipelineRig(ctx, s3cfg(), rdb, log, tp)
	if err != nil {
		return nil, err
	}
	defer on.close()
	for _, p := range []*pipelineRig{off, on} {
		if _, err := p.run(ctx, o.concurrency, warm, "warm"); err != nil {
			return nil, err
		}
	}
	// Throughput on a shared machine swings by more than the target from
	// run to run; the CPU time this process (worker, emulator, S3, the
	// span sink) spends per image is steadier, and is what tracing adds.
	var offRates, onRates, offCPU, onCPU []float64
	type side struct {
		rig        *pipelineRig
		rates, cpu *[]float64
	}
	for i := range tracingRounds {
		order := []side{{off, &offRates, &offCPU}, {on, &onRates, &onCPU}}
		if i%2 == 1 {
			slices.Reverse(order) // neither side always runs second
		}
		for _, v := range order {
			before := cpuTime()
			res, err := v.rig.run(ctx, o.concurrency, o.tasks, fmt.Sprintf("r%d", i))
			if err != nil {
				return nil, err
			}
			*v.rates = append(*v.rates, res.perSecond)
			*v.cpu = append(*v.cpu, float64((cpuTime()-before).Microseconds())/float64(o.tasks))
		}
	}
	if err := tp.ForceFlush(ctx); err != nil {
		return nil, fmt.Errorf("flush spans: %w", err)
	}
	offMed, onMed := median(offRates), median(onRates)
	ratio := onMed / offMed
	cpuOff, cpuOn := median(offCPU), median(onCPU)
	spread := func(xs []float64) string { return fmt.Sprintf("%.0f–%.0f", slices.Min(xs), slices.Max(xs)) }
	return []row{
		{"tracing", fmt.Sprintf("pipeline, tracing off (baseline), in-process S3, c=%d, median of %d (runs %s)", o.concurrency, tracingRounds, spread(offRates)), fmt.Sprintf("%.0f images/s", offMed), "1.00", "", ""},
		{"tracing", fmt.Sprintf("pipeline, tracing on: 100 %% sampled, OTLP/HTTP to a discarding endpoint (runs %s)", spread(onRates)), fmt.Sprintf("%.0f images/s", onMed), fmt.Sprintf("%.3f", ratio), "≥ 0.98", verdict(ratio >= 0.98)},
		{"tracing", "  CPU of the process per image, tracing off (baseline)", fmt.Sprintf("%.0f µs", cpuOff), "1.00", "", ""},
		{"tracing", fmt.Sprintf("  CPU of the process per image, tracing on (%.0f B of spans exported per image)", float64(exported.Load())/float64(warm+tracingRounds*o.tasks)), fmt.Sprintf("%.0f µs", cpuOn), fmt.Sprintf("%.3f", cpuOn/cpuOff), "≤ 1.02", verdict(cpuOn/cpuOff <= 1.02)},
	}, nil
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
