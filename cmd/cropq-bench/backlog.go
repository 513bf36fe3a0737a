package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/backlog"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/tasks"
)

// benchBacklog runs the backlog benchmark (make bench-backlog).
func benchBacklog(ctx context.Context, env *benchEnv, o options, progress io.Writer) ([]row, error) {
	return benchBacklogMemory(ctx, env, o)
}

// typicalRequest is a catalogue request as the issue sizes it: an id and a
// URL of the usual length, 800×800, in the backfill lane.
func typicalRequest(i int) tasks.Request {
	sku := fmt.Sprintf("%07d", i)
	return tasks.Request{RequestID: "sku-" + sku + "-main", ImageURL: "https://cdn.shop-example.com/catalog/images/" + sku + ".jpg",
		TargetWidth: 800, TargetHeight: 800, Priority: tasks.PriorityBackfill}
}

// usedMemory is Redis's used_memory.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	v, err := rdb.InfoMap(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v["Memory"]["used_memory"], 10, 64)
}

// backlogMemory queues n typical requests through enqueue into a flushed
// Redis and returns used_memory growth per request.
func backlogMemory(ctx context.Context, rdb *redis.Client, n int, enqueue func(context.Context, []tasks.Request) error) (float64, error) {
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return 0, err
	}
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return 0, err
	}
	const chunk = 1000
	for i := 0; i < n; i += chunk {
		var reqs []tasks.Request
		for j := i; j < min(i+chunk, n); j++ {
			reqs = append(reqs, typicalRequest(j))
		}
		if err := enqueue(ctx, reqs); err != nil {
			return 0, err
		}
	}
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n), nil
}

// benchBacklogMemory is the backlog benchmark's fifth part: Redis bytes per
// queued request and enqueue throughput, with the backlog and, as the
// baseline, straight into asynq as before it.
func benchBacklogMemory(ctx context.Context, env *benchEnv, o options) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 4 * o.enqueueGoroutines})
	defer rdb.Close()
	direct := producer.New(rdb, producer.Config{Concurrency: 1})
	defer direct.Close()
	withBacklog := producer.New(rdb, producer.Config{Concurrency: 1, Backlog: backlog.New(rdb, backlog.Config{})})
	defer withBacklog.Close()
	via := func(p *producer.Producer) func(context.Context, []tasks.Request) error {
		return func(ctx context.Context, reqs []tasks.Request) error { return checkResults(p.EnqueueBatch(ctx, reqs)) }
	}
	n := o.backlogMemN
	before, err := backlogMemory(ctx, rdb, n, via(direct))
	if err != nil {
		return nil, fmt.Errorf("memory, direct: %w", err)
	}
	after, err := backlogMemory(ctx, rdb, n, via(withBacklog))
	if err != nil {
		return nil, fmt.Errorf("memory, backlog: %w", err)
	}

	client := asynq.NewClientFromRedisClient(rdb)
	defer client.Close()
	g := o.enqueueGoroutines
	raw, err := timeEnqueue(ctx, rdb, o.enqueueN, g, func(ctx context.Context, reqs []tasks.Request) error {
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
	}, asynqPending(rdb))
	if err != nil {
		return nil, fmt.Errorf("raw asynq: %w", err)
	}
	bl := backlog.New(rdb, backlog.Config{})
	lib, err := timeEnqueue(ctx, rdb, o.enqueueN, g, via(withBacklog), bl.Size)
	if err != nil {
		return nil, fmt.Errorf("library: %w", err)
	}
	_ = rdb.FlushDB(ctx).Err()
	ratio := lib / raw
	return []row{
		{"backlog", fmt.Sprintf("Redis per queued request, %d URL requests, asynq task + JSON record (baseline)", n), fmt.Sprintf("%.0f B", before), "1.00", "", ""},
		{"backlog", "  … in the backlog (record + list entry, no task until fed)", fmt.Sprintf("%.0f B", after), fmt.Sprintf("%.2f", after/before), "≤ 600 B", verdict(after <= 600)},
		{"backlog", fmt.Sprintf("enqueue: raw asynq Enqueue, %d tasks, %d goroutines (baseline)", o.enqueueN, g), fmt.Sprintf("%.0f req/s", raw), "1.00", "", ""},
		{"backlog", "  … producer library into the backlog, batches of 500", fmt.Sprintf("%.0f req/s", lib), fmt.Sprintf("%.2f", ratio), "≥ 0.80", verdict(ratio >= 0.8)},
	}, nil
}
