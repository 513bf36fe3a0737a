package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/localstack"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

const (
	benchKey    = "bench-key"
	benchSecret = "bench-secret"
)

// benchPipeline compares end-to-end crops per second (zero-latency emulator,
// ~50 KB images, real Redis and MinIO) with asynq running no-op tasks on the
// same Redis at the same concurrency, in this run.
func benchPipeline(ctx context.Context, env *benchEnv, o options, log *slog.Logger) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 4 * o.concurrency})
	defer rdb.Close()

	// Warm both paths once (connections, JIT-free Go but cold caches), then measure.
	if _, err := runNoop(ctx, rdb, o.concurrency, 200); err != nil {
		return nil, err
	}
	base, err := runNoop(ctx, rdb, o.concurrency, o.tasks)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	minio := env.s3Config()
	fake := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	defer fake.Close()
	inproc := storage.S3Config{Endpoint: fake.URL, UsePathStyle: true, AccessKeyID: "bench", SecretAccessKey: "bench-secret"}

	results := map[string]runResult{}
	for _, v := range []struct {
		name string
		s3   storage.S3Config
	}{{"minio", minio}, {"inproc", inproc}} {
		p, err := newPipelineRig(ctx, v.s3, rdb, log, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		if _, err := p.run(ctx, o.concurrency, 100, "warm"); err != nil {
			p.close()
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		res, err := p.run(ctx, o.concurrency, o.tasks, "run")
		if err == nil && v.name == "minio" {
			results["put"], err = putCeiling(ctx, p.s3, p.bucket, res.resultBytes, o.concurrency, o.tasks)
		}
		p.close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		results[v.name] = res
	}
	mres, ires, put := results["minio"], results["inproc"], results["put"]
	ratio := func(r runResult) float64 { return r.perSecond / base.perSecond }
	paidPerImage := float64(mres.paid+ires.paid) / float64(2*o.tasks)
	kb := mres.resultBytes / 1000
	return []row{
		{"pipeline", fmt.Sprintf("asynq no-op tasks (baseline), c=%d", o.concurrency), fmt.Sprintf("%.0f tasks/s", base.perSecond), "1.00", "", ""},
		{"pipeline", fmt.Sprintf("crop→MinIO→status, %d KB results, c=%d", kb, o.concurrency), fmt.Sprintf("%.0f images/s", mres.perSecond), fmt.Sprintf("%.2f", ratio(mres)), "≥ 0.50", verdict(ratio(mres) >= 0.5)},
		{"pipeline", fmt.Sprintf("  MinIO PutObject alone, %d KB, c=%d (ceiling)", kb, o.concurrency), fmt.Sprintf("%.0f puts/s", put.perSecond), fmt.Sprintf("%.2f", ratio(put)), "", ""},
		{"pipeline", "  pipeline ÷ MinIO ceiling", "", fmt.Sprintf("%.2f", mres.perSecond/put.perSecond), "", ""},
		{"pipeline", fmt.Sprintf("crop→in-process S3→status, %d KB, c=%d", kb, o.concurrency), fmt.Sprintf("%.0f images/s", ires.perSecond), fmt.Sprintf("%.2f", ratio(ires)), "≥ 0.50", verdict(ratio(ires) >= 0.5)},
		{"pipeline", "paid API calls per image", fmt.Sprintf("%.3f", paidPerImage), "", "= 1", verdict(paidPerImage == 1)},
	}, nil
}

// putCeiling is how fast the S3 server takes objects of the pipeline's size
// with nothing else in the way: the most the pipeline could reach.
func putCeiling(ctx context.Context, c *s3.Client, bucket string, size int64, concurrency, n int) (runResult, error) {
	data := make([]byte, size)
	jobs := make(chan int)
	errs := make(chan error, concurrency)
	start := time.Now()
	for range concurrency {
		go func() {
			var err error
			for i := range jobs {
				if err != nil {
					continue // drain
				}
				_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(fmt.Sprintf("ceiling/%06d", i)),
					Body: bytes.NewReader(data), ContentLength: aws.Int64(size), ContentType: aws.String("image/jpeg")})
			}
			errs <- err
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	var err error
	for range concurrency {
		err = errors.Join(err, <-errs)
	}
	return runResult{perSecond: float64(n) / time.Since(start).Seconds()}, err
}

type runResult struct {
	perSecond   float64
	paid        int64
	resultBytes int64
}

// runNoop enqueues n no-op tasks, then times an asynq server through them.
func runNoop(ctx context.Context, rdb *redis.Client, concurrency, n int) (runResult, error) {
	const queue = "bench-noop"
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return runResult{}, err
	}
	client := asynq.NewClientFromRedisClient(rdb)
	for i := range n {
		t := asynq.NewTask("bench:noop", []byte(fmt.Sprintf(`{"i":%d}`, i)))
		if _, err := client.EnqueueContext(ctx, t, asynq.Queue(queue), asynq.Retention(time.Hour)); err != nil {
			return runResult{}, err
		}
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: concurrency, Queues: map[string]int{queue: 1},
		Logger: quietLogger{}, LogLevel: asynq.ErrorLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench:noop", func(context.Context, *asynq.Task) error { return nil })
	start := time.Now()
	if err := srv.Start(mux); err != nil {
		return runResult{}, err
	}
	defer srv.Shutdown()
	if err := awaitCompleted(ctx, rdb, queue, n); err != nil {
		return runResult{}, err
	}
	return runResult{perSecond: float64(n) / time.Since(start).Seconds()}, nil
}

// awaitCompleted waits until queue holds n completed tasks (tasks are
// enqueued with a retention, so asynq keeps them) and none failed.
func awaitCompleted(ctx context.Context, rdb *redis.Client, queue string, n int) error {
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := insp.GetQueueInfo(queue)
		if err == nil {
			if info.Retry > 0 || info.Archived > 0 {
				return fmt.Errorf("queue %s: %d retrying, %d archived: the benchmark needs every task to succeed", queue, info.Retry, info.Archived)
			}
			if info.Completed >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d completed tasks in %s: %w", n, queue, ctx.Err())
		case <-tick.C:
		}
	}
}

// pipelineRig is the cropq worker path with everything it talks to.
type pipelineRig struct {
	rdb      *redis.Client
	emu      *cropapitest.Server
	api      *httptest.Server
	images   *httptest.Server
	s3       *s3.Client
	bucket   string
	handler  *worker.Handler
	statuses *records.Store
	log      *slog.Logger
	tracer   trace.Tracer // nil: tracing off
}

// newPipelineRig builds the rig; tp, when set, traces it as `cropq
// worker` does with tracing on (and run gives each task a publish span
// and its traceparent, as the producer does).
func newPipelineRig(ctx context.Context, s3cfg storage.S3Config, rdb *redis.Client, log *slog.Logger, tp trace.TracerProvider) (*pipelineRig, error) {
	img, err := sampleHandler("ball-offcentre.jpg")
	if err != nil {
		return nil, err
	}
	emu, err := cropapitest.New(cropapitest.Config{AppKey: benchKey, AppSecret: benchSecret, Rate: 1e9, Burst: 1 << 30, CropCache: 8, Logger: log})
	if err != nil {
		return nil, err
	}
	p := &pipelineRig{rdb: rdb, emu: emu, log: log, bucket: "bench-pipeline", tracer: tracing.TracerIfOn(tp)}
	p.api = httptest.NewServer(emu)
	p.images = httptest.NewServer(img)
	api, err := cropapi.NewClient(cropapi.Config{BaseURL: p.api.URL, AppKey: benchKey, AppSecret: benchSecret, Limits: cropapi.Limits{AllowPrivateHosts: true}})
	if err != nil {
		p.close()
		return nil, err
	}
	p.s3, err = storage.NewS3Client(ctx, s3cfg)
	if err != nil {
		p.close()
		return nil, err
	}
	if err := localstack.CreateBucket(ctx, p.s3, p.bucket); err != nil {
		p.close()
		return nil, err
	}
	copier, err := results.New(p.s3, results.Config{Bucket: p.bucket, ResultHosts: []string{"127.0.0.1"}, AllowHTTP: true})
	if err != nil {
		p.close()
		return nil, err
	}
	p.statuses = records.NewStore(rdb, status.Config{})
	p.handler = worker.NewHandler(api, copier, p.statuses, worker.HandlerConfig{Logger: log, Limits: cropapi.Limits{AllowPrivateHosts: true},
		TracerProvider: tp})
	return p, nil
}

func (p *pipelineRig) close() {
	p.api.Close()
	p.images.Close()
}

// run enqueues n crop tasks as a producer does (status record, then task),
// then times a cropq worker through them.
func (p *pipelineRig) run(ctx context.Context, concurrency, n int, tag string) (runResult, error) {
	if err := p.rdb.FlushDB(ctx).Err(); err != nil {
		return runResult{}, err
	}
	p.emu.Reset()
	client := asynq.NewClientFromRedisClient(p.rdb)
	topts := tasks.Options{Retention: time.Hour, Limits: cropapi.Limits{AllowPrivateHosts: true}}
	for i := range n {
		pl := tasks.CropPayload{Request: tasks.Request{RequestID: fmt.Sprintf("bench-%s-%06d", tag, i), ImageURL: p.images.URL + "/ball.jpg",
			Params: tasks.Params{TargetWidth: 800, TargetHeight: 800, Bucket: p.bucket}}}
		if p.tracer != nil {
			pctx, span := p.tracer.Start(ctx, "publish crops", trace.WithSpanKind(trace.SpanKindProducer))
			pl.Traceparent = tracing.Traceparent(pctx)
			span.End()
		}
		task, opts, err := tasks.NewCropTask(pl, topts)
		if err != nil {
			return runResult{}, err
		}
		if _, _, err := p.statuses.Create(ctx, status.Record{RequestID: pl.RequestID, Params: tasks.Params{TargetWidth: 800, TargetHeight: 800}, Source: pl.Source(),
			Traceparent: pl.Traceparent}); err != nil {
			return runResult{}, err
		}
		if _, err := client.EnqueueContext(ctx, task, opts...); err != nil {
			return runResult{}, err
		}
	}
	srv := worker.NewServer(p.rdb, worker.ServerConfig{Concurrency: concurrency, Logger: p.log}, p.handler)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- srv.Run(runCtx) }()
	waitErr := awaitCompleted(ctx, p.rdb, tasks.DefaultQueue, n)
	elapsed := time.Since(start)
	stop()
	if err := errors.Join(waitErr, <-done); err != nil {
		return runResult{}, err
	}
	rec, err := p.statuses.Get(ctx, fmt.Sprintf("bench-%s-%06d", tag, n-1))
	if err != nil {
		return runResult{}, err
	}
	if rec.State != status.Succeeded || rec.Stored == nil {
		return runResult{}, fmt.Errorf("last task ended %s, want succeeded", rec.State)
	}
	return runResult{perSecond: float64(n) / elapsed.Seconds(), paid: p.emu.Stats().Usage, resultBytes: rec.Stored.Size}, nil
}

// quietLogger drops asynq's own logs in the baseline server.
type quietLogger struct{}

func (quietLogger) Debug(...any) {}
func (quietLogger) Info(...any)  {}
func (quietLogger) Warn(...any)  {}
func (quietLogger) Error(...any) {}
func (quietLogger) Fatal(...any) {}
