package worker_test

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// A completed task carrying its image inline is not kept: asynq would hold
// the whole image for the retention. A URL task is kept, and stays small.
func TestCompletedTasksStaySmall(t *testing.T) {
	ctx := context.Background()
	r := newPolicyRig(t, testenv.MinIO(t), rowSpec{})
	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "images", "mug-square.png"))
	require.NoError(t, err)
	for _, p := range []tasks.CropPayload{
		{Request: tasks.Request{RequestID: "inline-1", ImageBase64: base64.StdEncoding.EncodeToString(img), Params: tasks.Params{TargetWidth: 300, TargetHeight: 200}}},
		{Request: tasks.Request{RequestID: "url-1", ImageURL: r.images + "/good.png", Params: tasks.Params{TargetWidth: 300, TargetHeight: 200}}},
	} {
		task, opts, err := tasks.NewCropTask(p, tasks.Options{MaxRetry: 3, Limits: local})
		require.NoError(t, err)
		_, _, err = r.statuses.Create(ctx, status.Record{RequestID: p.RequestID, Source: p.Source()})
		require.NoError(t, err)
		_, err = r.client.Enqueue(task, opts...)
		require.NoError(t, err)
		r.await(t, p.RequestID, func(rec status.Record) bool { return rec.State == status.Succeeded }, "stored")
	}
	inspector := asynq.NewInspectorFromRedisClient(r.rdb)
	require.Eventually(t, func() bool {
		_, err := inspector.GetTaskInfo(tasks.DefaultQueue, "inline-1")
		return err != nil
	}, 10*time.Second, 10*time.Millisecond, "the inline task is deleted once completed")
	var info *asynq.TaskInfo
	require.Eventually(t, func() bool {
		info, err = inspector.GetTaskInfo(tasks.DefaultQueue, "url-1")
		return err == nil && info.State == asynq.TaskStateCompleted
	}, 10*time.Second, 10*time.Millisecond)
	bytes, err := r.rdb.MemoryUsage(ctx, rediskey.AsynqTask(tasks.DefaultQueue, "url-1")).Result()
	require.NoError(t, err)
	t.Logf("a completed URL task: %d bytes of Redis (MEMORY USAGE); the inline image was %d bytes", bytes, len(img))
	assert.Less(t, bytes, int64(1024), "docs/deploy.md sizes completed URL tasks at under 1 KB")
	for _, id := range []string{"inline-1", "url-1"} {
		rec, err := r.rdb.MemoryUsage(ctx, r.statuses.Key(id)).Result()
		require.NoError(t, err)
		t.Logf("the succeeded status record of %s: %d bytes", id, rec)
		assert.Less(t, rec, int64(2048), "docs/deploy.md sizes finished status records at under 2 KB")
	}
}
