package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/storage"
)

// The waiting variant: tasks per run, concurrency and rounds.
const (
	tracingWaitTasks       = 1000
	tracingWaitConcurrency = 32
	tracingWaitRounds      = 5
)

// tracingRounds alternates the runs with tracing off and on, so that a
// drift of the shared machine hits both alike. Each round's on/off ratio
// compares two runs made back to back; the median of those ratios counts.
const tracingRounds = 9

// warm is the tasks of each rig's first run, not measured.
const warm = 200

// benchTracing compares the pipeline's throughput (in-process S3, the
// faster and so the more sensitive variant) with tracing on, every span
// sampled and exported over OTLP/HTTP to an endpoint in this process that
// discards them, against tracing off, in this run: target ≤ 2 % fewer
// crops per second. Twice: CPU-bound (a vendor that answers at once, the
// worst case for tracing's share), and with the vendor's latency, as
// production runs.
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
	// One P: the process's CPU time is then its work alone, not the
	// scheduler's spinning between goroutines on a shared machine, which
	// swings by more than the target from run to run.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(o.tracingProcs))
	for _, p := range []*pipelineRig{off, on} {
		if _, err := p.run(ctx, o.concurrency, warm, "warm"); err != nil {
			return nil, err
		}
	}
	// Throughput on a shared machine swings by more than the target from
	// run to run; the CPU time this process (worker, emulator, S3, the
	// span sink) spends per image is steadier, and is what tracing adds.
	type sides struct{ offRates, onRates, offCPU, onCPU []float64 }
	measure := func(rounds, concurrency, n int, tag string) (sides, error) {
		var m sides
		type side struct {
			rig        *pipelineRig
			rates, cpu *[]float64
		}
		for i := range rounds {
			order := []side{{off, &m.offRates, &m.offCPU}, {on, &m.onRates, &m.onCPU}}
			if i%2 == 1 {
				slices.Reverse(order) // neither side always runs second
			}
			for _, v := range order {
				runtime.GC() // each run starts from the same heap, not the last run's garbage
				before := cpuTime()
				res, err := v.rig.run(ctx, concurrency, n, fmt.Sprintf("%s%d", tag, i))
				if err != nil {
					return m, err
				}
				*v.rates = append(*v.rates, res.perSecond)
				*v.cpu = append(*v.cpu, float64((cpuTime()-before).Microseconds())/float64(n))
			}
		}
		return m, nil
	}
	bound, err := measure(tracingRounds, o.concurrency, o.tasks, "r")
	if err != nil {
		return nil, err
	}
	if err := tp.ForceFlush(ctx); err != nil {
		return nil, fmt.Errorf("flush spans: %w", err)
	}
	perImage := float64(exported.Load()) / float64(warm+tracingRounds*o.tasks)
	// The same pipeline as production runs it: the vendor's call takes its
	// time (200 ± 50 ms here), so that workers wait rather than compute.
	vendor := cropapitest.Faults{Latency: 200 * time.Millisecond, LatencyJitter: 50 * time.Millisecond}
	for _, p := range []*pipelineRig{off, on} {
		p.emu.SetFaults(vendor)
	}
	waiting, err := measure(tracingWaitRounds, tracingWaitConcurrency, tracingWaitTasks, "w")
	if err != nil {
		return nil, err
	}
	spread := func(xs []float64) string { return fmt.Sprintf("%.0f–%.0f", slices.Min(xs), slices.Max(xs)) }
	ratio := median(pairRatios(bound.onRates, bound.offRates))
	cpuRatio := median(pairRatios(bound.onCPU, bound.offCPU))
	waitRatio := median(pairRatios(waiting.onRates, waiting.offRates))
	return []row{
		{"tracing", fmt.Sprintf("CPU-bound pipeline (no vendor latency, in-process S3, c=%d, one P), tracing off (baseline), median of %d (runs %s)", o.concurrency, tracingRounds, spread(bound.offRates)), fmt.Sprintf("%.0f images/s", median(bound.offRates)), "1.00", "", ""},
		{"tracing", fmt.Sprintf("  … tracing on: 100 %% sampled, OTLP/HTTP to a discarding endpoint (runs %s)", spread(bound.onRates)), fmt.Sprintf("%.0f images/s", median(bound.onRates)), fmt.Sprintf("%.3f", ratio), "≥ 0.98", verdict(ratio >= 0.98)},
		{"tracing", "  CPU of the process per image, tracing off (baseline)", fmt.Sprintf("%.0f µs", median(bound.offCPU)), "1.00", "", ""},
		{"tracing", fmt.Sprintf("  CPU of the process per image, tracing on (%.0f B of spans exported per image)", perImage), fmt.Sprintf("%.0f µs", median(bound.onCPU)), fmt.Sprintf("%.3f", cpuRatio), "≤ 1.02", verdict(cpuRatio <= 1.02)},
		{"tracing", fmt.Sprintf("pipeline with the vendor's latency (200 ± 50 ms, c=%d, one P), tracing off (baseline), median of %d (runs %s)", tracingWaitConcurrency, tracingWaitRounds, spread(waiting.offRates)), fmt.Sprintf("%.1f images/s", median(waiting.offRates)), "1.00", "", ""},
		{"tracing", fmt.Sprintf("  … tracing on, 100 %% sampled (runs %s; CPU per image %.0f → %.0f µs)", spread(waiting.onRates), median(waiting.offCPU), median(waiting.onCPU)), fmt.Sprintf("%.1f images/s", median(waiting.onRates)), fmt.Sprintf("%.3f", waitRatio), "≥ 0.98", verdict(waitRatio >= 0.98)},
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

// pairRatios is on[i]/off[i]: the two runs of one round, made back to
// back, see the same machine.
func pairRatios(on, off []float64) []float64 {
	rs := make([]float64, len(on))
	for i := range on {
		rs[i] = on[i] / off[i]
	}
	return rs
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
