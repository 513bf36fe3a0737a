package worker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"image"
	"image/png"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// RecordOf writes again, from a task's payload, the record the producer
// wrote for its request: every field the producer sets, so that a record
// Redis lost tells the same truth when written again.
func TestRecordOfIsTheProducersRecord(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t).Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	p := producer.New(rdb, producer.Config{Task: tasks.Options{Limits: local}, Backlog: true})
	t.Cleanup(func() { _ = p.Close() })
	var img bytes.Buffer
	require.NoError(t, png.Encode(&img, image.NewGray(image.Rect(0, 0, 512, 512))))
	no := false
	reqs := []tasks.Request{
		{RequestID: "url-1", ImageURL: "https://cdn.example.com/a.jpg", Params: tasks.Params{TargetWidth: 800, TargetHeight: 600, BatchID: "cat",
			Tenant: "acme", Priority: "backfill", Bucket: "my-bucket", KeyTemplate: "x/{requestId}.{ext}", Metadata: map[string]string{"sku": "1"},
			CallbackURL: "https://hooks.example.com/c"}, Dedup: &no},
		{RequestID: "b64-1", ImageBase64: base64.StdEncoding.EncodeToString(img.Bytes()), Params: tasks.Params{TargetWidth: 100, TargetHeight: 100}},
	}
	st := records.NewStore(rdb, status.Config{})
	for _, req := range reqs {
		res := p.Enqueue(ctx, req)
		require.Equal(t, producer.Enqueued, res.Outcome, "%v", res.Err)
		rec, err := st.Get(ctx, req.RequestID)
		require.NoError(t, err)
		got := worker.RecordOf(tasks.CropPayload{Version: tasks.PayloadVersion, Request: req, EnqueuedAt: rec.CreatedAt})
		rec.UpdatedAt, rec.History, rec.BatchSeq = time.Time{}, nil, 0 // the store's own
		got.State = status.Queued
		assert.Equal(t, rec, got, req.RequestID)
	}
}
