package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

// enqueueBenchToken is the in-process API's token (httpapi.MinTokenLength
// characters or more, as every token).
const enqueueBenchToken = "bench-enqueue-token"

// benchEnqueue compares bulk enqueue through the library and through the
// HTTP batch endpoint with raw asynq Enqueue, from the same number of
// goroutines, in this run; then measures the Redis memory that queued
// requests with 2 MB images take with and without the claim check.
func benchEnqueue(ctx context.Context, env *benchEnv, o options) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 4 * o.enqueueGoroutines})
	defer rdb.Close()
	n, g := o.enqueueN, o.enqueueGoroutines

	// Each variant gets its own fresh client: asynq's client remembers the
	// queues it registered, and timeEnqueue flushes Redis first.
	client := asynq.NewClientFromRedisClient(rdb)
	defer client.Close()
	raw, err := timeEnqueue(ctx, rdb, n, g, rawEnqueue(client), asynqPending(rdb))
	if err != nil {
		return nil, fmt.Errorf("raw: %w", err)
	}

	// One enqueue in flight per goroutine, as for raw asynq: the library's
	// gain is the pipelined status records, not more parallelism.
	p := producer.New(rdb, producer.Config{Concurrency: 1})
	defer p.Close()
	lib, err := timeEnqueue(ctx, rdb, n, g, func(ctx context.Context, reqs []tasks.Request) error {
		return checkResults(p.EnqueueBatch(ctx, reqs))
	}, asynqPending(rdb))
	if err != nil {
		return nil, fmt.Errorf("library: %w", err)
	}

	p2 := producer.New(rdb, producer.Config{Concurrency: 1})
	defer p2.Close()
	api, err := httpapi.New(p2, httpapi.Config{Tokens: []string{enqueueBenchToken}, MaxBatch: o.enqueueChunk})
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: g}}
	viaHTTP, err := timeEnqueue(ctx, rdb, n, g, func(ctx context.Context, reqs []tasks.Request) error {
		return postBatch(ctx, hc, srv.URL, reqs)
	}, asynqPending(rdb))
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}

	without, with, perReq, err := claimCheckMemory(ctx, env, rdb, o.memImages)
	if err != nil {
		return nil, fmt.Errorf("claim check: %w", err)
	}
	mib := func(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }
	scale := 1000 / float64(o.memImages)
	libRatio := lib / raw
	return []row{
		{"enqueue", fmt.Sprintf("raw asynq Enqueue, %d tasks, %d goroutines (baseline)", n, g), fmt.Sprintf("%.0f req/s", raw), "1.00", "", ""},
		{"enqueue", fmt.Sprintf("producer library, batches of %d, status records included", o.enqueueChunk), fmt.Sprintf("%.0f req/s", lib), fmt.Sprintf("%.2f", libRatio), "≥ 0.80", verdict(libRatio >= 0.8)},
		{"enqueue", fmt.Sprintf("HTTP POST /v1/crops/batch, %d per request", o.enqueueChunk), fmt.Sprintf("%.0f req/s", viaHTTP), fmt.Sprintf("%.2f", viaHTTP/raw), "", ""},
		{"enqueue", fmt.Sprintf("Redis data per 1,000 queued %s images, payload in Redis (%d measured)", human(perReq), o.memImages), mib(without * scale), "1.00", "", ""},
		{"enqueue", "  … with the claim check (image in S3)", mib(with * scale), fmt.Sprintf("%.4f", with/without), "", ""},
	}, nil
}

// timeEnqueue splits n fresh requests among g goroutines, each handing
// chunks to enqueue, and returns requests per second.
func timeEnqueue(ctx context.Context, rdb *redis.Client, n, g int, enqueue func(context.Context, []tasks.Request) error, queued func(context.Context) (int64, error)) (float64, error) {
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return 0, err
	}
	const chunk = 500
	work := make(chan []tasks.Request)
	errs := make(chan error, g)
	start := time.Now()
	var wg sync.WaitGroup
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			for reqs := range work {
				if err == nil {
					err = enqueue(ctx, reqs)
				}
			}
			errs <- err
		}()
	}
	for i := 0; i < n; i += chunk {
		var reqs []tasks.Request
		for j := i; j < min(i+chunk, n); j++ {
			reqs = append(reqs, tasks.Request{RequestID: "enq-" + strconv.Itoa(j), ImageURL: "https://cdn.example.com/p/" + strconv.Itoa(j) + ".jpg",
				Params: tasks.Params{TargetWidth: 800, TargetHeight: 800, BatchID: "bench"}})
		}
		work <- reqs
	}
	close(work)
	wg.Wait()
	close(errs)
	var err error
	for e := range errs {
		err = errors.Join(err, e)
	}
	rate := float64(n) / time.Since(start).Seconds()
	if err != nil {
		return 0, err
	}
	got, err := queued(ctx)
	if err != nil {
		return 0, err
	}
	if got != int64(n) {
		return 0, fmt.Errorf("%d requests queued, want %d", got, n)
	}
	return rate, nil
}

// rawEnqueue enqueues each request as a crop task straight into asynq: the
// baseline of the enqueue benchmarks.
func rawEnqueue(client *asynq.Client) func(context.Context, []tasks.Request) error {
	return func(ctx context.Context, reqs []tasks.Request) error {
		for _, r := range reqs {
			task, opts, err := tasks.NewCropTask(tasks.CropPayload{Request: r}, tasks.Options{})
			if err != nil {
				return err
			}
			if _, err := client.EnqueueContext(ctx, task, opts...); err != nil {
				return err
			}
		}
		return nil
	}
}

// asynqPending counts the crop queue's pending tasks.
func asynqPending(rdb *redis.Client) func(context.Context) (int64, error) {
	return func(context.Context) (int64, error) {
		info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(tasks.DefaultQueue)
		if err != nil {
			return 0, err
		}
		return int64(info.Pending), nil
	}
}

func checkResults(res []producer.Result) error {
	for _, r := range res {
		if r.Outcome != producer.Enqueued {
			return fmt.Errorf("%s: %s: %v", r.RequestID, r.Outcome, r.Err)
		}
	}
	return nil
}

func postBatch(ctx context.Context, hc *http.Client, base string, reqs []tasks.Request) error {
	items := make([]httpapi.CropRequest, len(reqs))
	for i, r := range reqs {
		items[i] = httpapi.CropRequest{RequestID: r.RequestID, ImageURL: r.ImageURL, Params: tasks.Params{TargetWidth: r.TargetWidth, TargetHeight: r.TargetHeight, BatchID: r.BatchID}}
	}
	body, err := json.Marshal(httpapi.BatchRequest{Items: items})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/crops/batch", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+enqueueBenchToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out httpapi.BatchResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	if out.Counts["enqueued"] != len(reqs) {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("HTTP %d: %v %s", resp.StatusCode, out.Counts, strings.TrimSpace(string(b)))
	}
	return nil
}

// claimCheckMemory enqueues k requests carrying a ~2 MB image, without and
// with the claim check, and returns Redis's used memory growth for each and
// the image size.
func claimCheckMemory(ctx context.Context, env *benchEnv, rdb *redis.Client, k int) (without, with float64, imgSize int64, err error) {
	img, err := noisePNG(840, 840) // ~2 MB: noise barely compresses
	if err != nil {
		return 0, 0, 0, err
	}
	b64 := base64.StdEncoding.EncodeToString(img)
	bucket := fmt.Sprintf("bench-inputs-%d", time.Now().UnixNano())
	s3c, err := env.newBucket(ctx, bucket)
	if err != nil {
		return 0, 0, 0, err
	}
	inputs, err := storage.NewInputs(s3c, storage.InputsConfig{Bucket: bucket})
	if err != nil {
		return 0, 0, 0, err
	}
	measure := func(cfg producer.Config) (float64, error) {
		if err := rdb.FlushDB(ctx).Err(); err != nil {
			return 0, err
		}
		p := producer.New(rdb, cfg)
		defer p.Close()
		var reqs []tasks.Request
		for i := range k {
			reqs = append(reqs, tasks.Request{RequestID: "mem-" + strconv.Itoa(i), ImageBase64: b64, Params: tasks.Params{TargetWidth: 800, TargetHeight: 800}})
		}
		for i := 0; i < k; i += 20 {
			if err := checkResults(p.EnqueueBatch(ctx, reqs[i:min(i+20, k)])); err != nil {
				return 0, err
			}
		}
		used, err := datasetBytes(ctx, rdb)
		return float64(used), err
	}
	if without, err = measure(producer.Config{}); err != nil { // no Inputs: payloads carry the image
		return 0, 0, 0, err
	}
	if with, err = measure(producer.Config{Inputs: inputs}); err != nil {
		return 0, 0, 0, err
	}
	_ = rdb.FlushDB(ctx).Err()
	return without, with, int64(len(img)), nil
}

// datasetBytes sums MEMORY USAGE over every key: the data the queued
// requests hold, without the transient client buffers INFO's used_memory
// also counts.
func datasetBytes(ctx context.Context, rdb *redis.Client) (int64, error) {
	var total int64
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		n, err := rdb.MemoryUsage(ctx, iter.Val(), 0).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		total += n
	}
	return total, iter.Err()
}
