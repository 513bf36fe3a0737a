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
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/storage"
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

	exp, exported, closeSink, err := discardingExporter(ctx)
	if err != nil {
		return nil, err
	}
	defer closeSink()
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
	ratio := median(pairRatios(onRates, offRates))
	cpuOff, cpuOn := median(offCPU), median(onCPU)
	cpuRatio := median(pairRatios(onCPU, offCPU))
	spread := func(xs []float64) string { return fmt.Sprintf("%.0f–%.0f", slices.Min(xs), slices.Max(xs)) }
	pipelineBytes := float64(exported.Load()) / float64(warm+tracingRounds*o.tasks)
	own, ownBytes, err := spanCost(ctx)
	if err != nil {
		return nil, err
	}
	// Tracing's own CPU per image against the traced image's: the part of a
	// CPU-bound pipeline's throughput it takes.
	share := own / (cpuOff + own)
	return []row{
		{"tracing", fmt.Sprintf("pipeline, tracing off (baseline), in-process S3, c=%d, median of %d (runs %s)", o.concurrency, tracingRounds, spread(offRates)), fmt.Sprintf("%.0f images/s", offMed), "1.00", "", ""},
		{"tracing", fmt.Sprintf("pipeline, tracing on: 100 %% sampled, OTLP/HTTP to a discarding endpoint (runs %s)", spread(onRates)), fmt.Sprintf("%.0f images/s", onMed), fmt.Sprintf("%.3f", ratio), "≥ 0.98", verdict(ratio >= 0.98)},
		{"tracing", "  CPU of the process per image, tracing off (baseline)", fmt.Sprintf("%.0f µs", cpuOff), "1.00", "", ""},
		{"tracing", fmt.Sprintf("  CPU of the process per image, tracing on (%.0f B of spans exported per image)", float64(exported.Load())/float64(warm+tracingRounds*o.tasks)), fmt.Sprintf("%.0f µs", cpuOn), fmt.Sprintf("%.3f", cpuRatio), "≤ 1.02", verdict(cpuRatio <= 1.02)},
		{"tracing", fmt.Sprintf("  tracing's own CPU per image: one image's spans alone, started, ended and exported (%.0f B per image; the pipeline's: %.0f B)", ownBytes, pipelineBytes), fmt.Sprintf("%.1f µs", own), fmt.Sprintf("%.3f", 1-share), "≥ 0.98", verdict(share <= 0.02)},
	}, nil
}

// discardingExporter is an OTLP/HTTP exporter to an endpoint in this
// process that counts the bytes it is sent and discards them.
func discardingExporter(ctx context.Context) (*otlptrace.Exporter, *atomic.Int64, func(), error) {
	exported := new(atomic.Int64)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		exported.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(sink.URL+"/v1/traces"))
	if err != nil {
		sink.Close()
		return nil, nil, nil, err
	}
	return exp, exported, sink.Close, nil
}

// spanCostRounds is how many images' spans spanCost makes.
const spanCostRounds = 20000

// spanCost is the CPU time per image of tracing alone: the spans the
// traced pipeline makes for one image (publish, process, crop api call,
// copy result, with their attributes and link), started, ended and
// exported by the same SDK, batcher and OTLP/HTTP exporter to a discarding
// endpoint, with nothing else running in them. Unlike the pipeline's
// runs, which swing by more than the target, it repeats to a few percent.
// The bytes exported per image show it makes what the pipeline makes.
func spanCost(ctx context.Context) (µs, bytesPerImage float64, err error) {
	exp, exported, closeSink, err := discardingExporter(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer closeSink()
	// Blocking: this loop makes spans faster than any pipeline, and a
	// span the batcher dropped would cost nothing to export.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBlocking()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	tr := tp.Tracer("github.com/cropq/cropq")
	before := cpuTime()
	for i := range spanCostRounds {
		id := fmt.Sprintf("bench-r0-%06d", i)
		pctx, publish := tr.Start(ctx, "publish crops", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			tracing.MessagingSystem.String(tracing.SystemValue), tracing.MessagingOp.String("send"), tracing.MessagingDest.String("crops"),
			tracing.MessagingID.String(id)))
		publish.End()
		sc := trace.SpanContextFromContext(pctx)
		actx, process := tr.Start(trace.ContextWithRemoteSpanContext(ctx, sc), "process crops", trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithLinks(trace.Link{SpanContext: sc}), trace.WithAttributes(
				tracing.MessagingSystem.String(tracing.SystemValue), tracing.MessagingOp.String("process"), tracing.MessagingOpName.String("process"),
				tracing.MessagingDest.String("crops"), tracing.MessagingID.String(id), tracing.TaskID.String(id), tracing.Attempt.Int(1),
				tracing.Tenant.String("default"), tracing.Rescue.Bool(false)))
		_, call := tr.Start(actx, "crop api call", trace.WithSpanKind(trace.SpanKindClient))
		call.SetAttributes(tracing.VendorReqID.String("3b6e0a7c9d2f4e1a8b5c6d7e8f9a0b1c"), tracing.VendorCode.Int(200), attribute.Int64("cropq.vendor.took_ms", 1))
		call.End()
		_, cp := tr.Start(actx, "copy result")
		cp.SetAttributes(tracing.Bucket.String("bench-pipeline"), tracing.Key.String("crops/"+id+".jpg"), tracing.Size.Int64(41234))
		cp.End()
		process.End()
	}
	err = tp.Shutdown(ctx) // exports what is left: part of the cost
	used := cpuTime() - before
	return float64(used.Microseconds()) / spanCostRounds, float64(exported.Load()) / spanCostRounds, err
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
