package worker_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// gatedQuota gives its first free tokens at once; each later Wait says so
// on waiting and blocks until the gate opens. With none free it stands for
// a worker frozen (SIGSTOP) just before it pays: its attempt holds the crop,
// and neither it nor its lease renewal moves until the test opens the gate.
type gatedQuota struct {
	free    atomic.Int32
	waiting chan struct{}
	open    chan struct{}
	once    sync.Once
}

func newGatedQuota(free int32) *gatedQuota {
	q := &gatedQuota{waiting: make(chan struct{}, 8), open: make(chan struct{})}
	q.free.Store(free)
	return q
}

func (q *gatedQuota) Wait(ctx context.Context) error {
	if q.free.Add(-1) >= 0 {
		return nil
	}
	select {
	case q.waiting <- struct{}{}:
	default:
	}
	select {
	case <-q.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *gatedQuota) openGate() { q.once.Do(func() { close(q.open) }) }

func (q *gatedQuota) Observe(context.Context, bool) {}

// A worker freezes holding a crop: its lease runs out, the rescuer hands
// the crop to a new task, another worker stores it, and the frozen worker,
// thawed, neither pays nor writes; asynq's own late retry of the old task
// finds the request owned and stops quietly. One paid call in all.
func TestAFrozenWorkersCropIsRescued(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	emu, err := cropapitest.New(cropapitest.Config{AppKey: "k", AppSecret: "s"})
	require.NoError(t, err)
	api := httptest.NewServer(emu)
	t.Cleanup(api.Close)
	images := serveImages(t)
	s3c, bucket := testenv.MinIOBucket(t, testenv.MinIO(t))
	statuses := records.NewStore(rdb, status.Config{})

	newHandler := func(leases *lease.Leases, q worker.Quota) *worker.Handler {
		copier, err := results.New(s3c, results.Config{Bucket: bucket, ResultHosts: []string{"127.0.0.1"}, AllowHTTP: true})
		require.NoError(t, err)
		client, err := cropapi.NewClient(cropapi.Config{BaseURL: api.URL, AppKey: "k", AppSecret: "s", Limits: local})
		require.NoError(t, err)
		return worker.NewHandler(client, copier, statuses, worker.HandlerConfig{Limits: local, Leases: worker.RedisLeases(leases), Quota: q})
	}
	run := func(h *worker.Handler) {
		ws := worker.NewServer(rdb, worker.ServerConfig{Concurrency: 1, DelayedTaskCheckInterval: checkInterval, ShutdownTimeout: 2 * time.Second,
			Backoff: worker.Backoff{Base: backoffBase, Cap: backoffCap, RateLimitDelay: backoffBase}}, h)
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _ = ws.Run(rctx) }()
		t.Cleanup(func() { cancel(); wg.Wait() })
	}

	// Worker A: its leases are never renewed (it is frozen) and last 500 ms.
	frozen := newGatedQuota(0)
	leasesA := lease.New(rdb, lease.Config{TTL: 500 * time.Millisecond, Owner: "worker-a"})
	const id = "frozen-1"
	p := tasks.CropPayload{Request: tasks.Request{RequestID: id, ImageURL: images + "/good.png", Params: tasks.Params{TargetWidth: 300, TargetHeight: 200}}}
	task, opts, err := tasks.NewCropTask(p, tasks.Options{MaxRetry: 3, Limits: local})
	require.NoError(t, err)
	_, _, err = statuses.Create(ctx, status.Record{RequestID: id, Source: p.Source()})
	require.NoError(t, err)
	aq := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = aq.Close() })
	_, err = aq.Enqueue(task, opts...)
	require.NoError(t, err)
	run(newHandler(leasesA, frozen))
	select {
	case <-frozen.waiting:
	case <-time.After(30 * time.Second):
		t.Fatal("worker A never took the crop")
	}

	// Worker B, renewing its leases, and the fleet's rescuer.
	leasesB := lease.New(rdb, lease.Config{TTL: 5 * time.Second})
	lctx, stopLeases := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	lwg.Add(1)
	go func() { defer lwg.Done(); leasesB.Run(lctx) }()
	t.Cleanup(func() { stopLeases(); lwg.Wait() })
	run(newHandler(leasesB, nil))
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	enq := backlog.TaskEnqueuer{Client: aq, Records: statuses, Inspector: inspector}
	var rescued []lease.Holder
	require.Eventually(t, func() bool {
		hs, err := leasesB.Rescue(ctx, enq, 10)
		rescued = append(rescued, hs...)
		return err == nil && len(rescued) > 0
	}, 30*time.Second, 50*time.Millisecond)
	assert.Equal(t, []lease.Holder{{Queue: tasks.DefaultQueue, TaskID: id, Attempt: 1, Owner: "worker-a"}}, rescued)

	var rec status.Record
	require.Eventually(t, func() bool {
		rec, err = statuses.Get(ctx, id)
		return err == nil && rec.State == status.Succeeded
	}, 30*time.Second, 20*time.Millisecond)
	assert.Equal(t, tasks.RescueTaskID(id, 1), rec.Task, "the rescue task owns the request")
	assert.Equal(t, 2, rec.Attempt, "the rescue's attempt follows the one it replaced")
	assert.Equal(t, 1, rec.PaidCalls)

	// Thaw A: it must not pay for a crop it no longer owns.
	frozen.openGate()
	// asynq's late retry of A's task finds the request owned and completes
	// quietly (it runs within the test: the hand-back is not a failure and
	// waits about a second).
	require.Eventually(t, func() bool {
		info, err := inspector.GetTaskInfo(tasks.DefaultQueue, id)
		return err == nil && info.State == asynq.TaskStateCompleted
	}, 30*time.Second, 50*time.Millisecond, "the old task ends quietly")
	after, err := statuses.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, status.Succeeded, after.State, "nothing wrote over the stored crop")
	assert.Equal(t, rec.UpdatedAt, after.UpdatedAt)
	assert.EqualValues(t, 1, emu.Stats().Calls["200"], "one paid call in all")
	n, err := leasesB.Count(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "every lease was released")
}
