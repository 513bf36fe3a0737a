// Command producer is a runnable example of an ingestion pipeline using the
// cropq Go library: it submits a batch of crops in one call, then follows
// their completion on the events stream with a consumer group, as a real
// pipeline would.
//
// Against the local stack (in another terminal: make run, which prints its
// Redis URL and keeps serving):
//
//	go run ./examples/producer -redis redis://127.0.0.1:PORT/0 -url https://example.com/a.jpg -url https://example.com/b.jpg
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

type urls []string

func (u *urls) String() string     { return strings.Join(*u, ",") }
func (u *urls) Set(s string) error { *u = append(*u, s); return nil }

func main() {
	redisURL := flag.String("redis", "redis://127.0.0.1:6379/0", "Redis of the cropq deployment")
	width := flag.Int("width", 800, "target width")
	height := flag.Int("height", 800, "target height")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for the results")
	local := flag.Bool("allow-private-urls", false, "accept image URLs on localhost/private addresses (the local stack only)")
	var images urls
	flag.Var(&images, "url", "image URL to crop (repeat)")
	flag.Parse()
	if len(images) == 0 {
		log.Fatal("give at least one -url")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *redisURL, images, *width, *height, *timeout, *local); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, redisURL string, images []string, w, h int, timeout time.Duration, local bool) error {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	// The events stream holds every terminal transition; a consumer group
	// created at "$" sees those that happen from now on, and survives this
	// process (a restarted pipeline reads on where it stopped).
	events := status.Config{}.EventsKey()
	const group = "example-pipeline"
	if err := rdb.XGroupCreateMkStream(ctx, events, group, "$").Err(); err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("create consumer group: %w", err)
	}

	// Backlog: the requests wait in the fleet's priority lanes and tenant
	// shares, and the workers' feeder moves them into asynq.
	p := producer.New(rdb, producer.Config{Backlog: true, Task: tasks.Options{Limits: cropapi.Limits{AllowPrivateHosts: local}}})
	defer p.Close()
	batch := fmt.Sprintf("example-%d", time.Now().Unix())
	var reqs []tasks.Request
	for i, u := range images {
		reqs = append(reqs, tasks.Request{RequestID: fmt.Sprintf("%s-%d", batch, i), ImageURL: u, Params: tasks.Params{TargetWidth: w, TargetHeight: h, BatchID: batch}})
	}
	pending := map[string]bool{}
	for _, res := range p.EnqueueBatch(ctx, reqs) {
		fmt.Printf("%-28s %s\n", res.RequestID, res.Outcome)
		if res.Err != nil {
			fmt.Printf("  %v\n", res.Err) // names the field and the limit
			continue
		}
		pending[res.RequestID] = true
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for len(pending) > 0 {
		streams, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "example", Streams: []string{events, ">"},
			Count: 100, Block: 2 * time.Second}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		for _, m := range streams[0].Messages {
			id, _ := m.Values["requestId"].(string)
			if pending[id] {
				delete(pending, id)
				fmt.Printf("%-28s %s %v %v %v\n", id, m.Values["state"], m.Values["bucket"], m.Values["key"], m.Values["errorCode"])
			}
			// Acknowledge everything read: other pipelines use their own groups.
			rdb.XAck(ctx, events, group, m.ID)
		}
	}
	counts, err := p.BatchCounts(ctx, "", batch)
	if err != nil {
		return err
	}
	fmt.Printf("batch %s: %v\n", batch, counts)
	return nil
}
