package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/manifest"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/requestfile"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// manifestLines is n typical catalogue requests as JSONL (a manifest or a
// bulk file).
func manifestLines(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		line, _ := json.Marshal(typicalRequest(i))
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// benchManifest is `make bench-manifest`: Redis bytes per line of a
// manifest registered and waiting, and the reader's lines per second,
// each against the same lines through `cropq enqueue --file`'s path (its
// parser and the producer library into the backlog), measured in this run.
func benchManifest(ctx context.Context, env *benchEnv, o options, progress io.Writer) ([]row, error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr(), PoolSize: 16})
	defer rdb.Close()
	s3c, err := env.newBucket(ctx, "bench-manifest")
	if err != nil {
		return nil, err
	}
	objects := manifest.S3{Client: s3c}
	prod := producer.New(rdb, producer.Config{Backlog: true, Manifests: objects})
	defer prod.Close()
	store := records.NewStore(rdb, status.Config{})
	put := func(key string, body []byte) error {
		_, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bench-manifest"), Key: aws.String(key), Body: bytes.NewReader(body)})
		return err
	}

	// Baseline: the lines through the --file path, into a flushed Redis.
	fileN := o.manifestFileN
	fmt.Fprintf(progress, "manifest: %d lines through the --file path…\n", fileN)
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return nil, err
	}
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}
	next := requestfile.JSONLRows(bytes.NewReader(manifestLines(fileN)))
	start := time.Now()
	var chunk []tasks.Request
	flush := func() error {
		err := checkResults(prod.EnqueueBatch(ctx, chunk))
		chunk = chunk[:0]
		return err
	}
	for r, ok := next(); ok; r, ok = next() {
		if r.Err != nil {
			return nil, r.Err
		}
		r.Req.BatchID = "bulk"
		chunk = append(chunk, r.Req)
		if len(chunk) == 500 {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	fileRate := float64(fileN) / time.Since(start).Seconds()
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}
	filePerLine := float64(after-before) / float64(fileN)

	// A manifest of n lines registered, its reader's first top-up done:
	// what waits of it in Redis is its descriptor and Target requests.
	n := o.manifestN
	fmt.Fprintf(progress, "manifest: a %d-line manifest registered and waiting…\n", n)
	if err := put("big.jsonl", manifestLines(n)); err != nil {
		return nil, err
	}
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return nil, err
	}
	before, err = usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}
	if _, err := prod.RegisterManifest(ctx, "", producer.ManifestRequest{Manifest: "s3://bench-manifest/big.jsonl"}); err != nil {
		return nil, err
	}
	reader := manifest.NewReader(store, objects, prod, manifest.Config{})
	if err := reader.Refill(ctx); err != nil {
		return nil, err
	}
	m, _, err := store.Manifest(ctx, "", "big")
	if err != nil {
		return nil, err
	}
	after, err = usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}
	perLine := float64(after-before) / float64(n)

	// The reader alone, quota not limiting: lines read, validated and fed
	// into the backlog per second.
	readN := o.manifestReadN
	fmt.Fprintf(progress, "manifest: the reader over %d lines…\n", readN)
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return nil, err
	}
	if _, err := prod.RegisterManifest(ctx, "", producer.ManifestRequest{BatchID: "speed", Manifest: "s3://bench-manifest/big.jsonl"}); err != nil {
		return nil, err
	}
	start = time.Now()
	read, err := reader.Read(ctx, "", "speed", readN)
	if err != nil {
		return nil, err
	}
	readRate := float64(read) / time.Since(start).Seconds()
	queued, err := store.BatchCounts(ctx, "", "speed")
	if err != nil {
		return nil, err
	}
	if queued[status.Queued] != int64(read) {
		return nil, fmt.Errorf("the reader read %d lines but %d requests are queued", read, queued[status.Queued])
	}
	_ = rdb.FlushDB(ctx).Err()

	return []row{
		{"manifest", fmt.Sprintf("Redis per waiting line: %d lines through enqueue --file (baseline)", fileN), fmt.Sprintf("%.0f B", filePerLine), "1.00", "", ""},
		{"manifest", fmt.Sprintf("  … a %d-line manifest registered, %d requests created ahead (%d lines read)", n, manifest.DefaultTarget, m.Read),
			fmt.Sprintf("%.2f B", perLine), fmt.Sprintf("%.4f", perLine/filePerLine), "≤ 10 B", verdict(perLine <= 10)},
		{"manifest", fmt.Sprintf("lines per second: %d lines through enqueue --file's parser and library (baseline)", fileN), fmt.Sprintf("%.0f lines/s", fileRate), "1.00", "", ""},
		{"manifest", fmt.Sprintf("  … the manifest reader alone, %d lines read, validated and fed into the backlog", read),
			fmt.Sprintf("%.0f lines/s", readRate), fmt.Sprintf("%.2f", readRate/fileRate), "≥ 20,000/s", verdict(readRate >= 20000)},
	}, nil
}
