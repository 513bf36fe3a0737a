package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
	"github.com/cropq/cropq/worker"
)

// A configuration New cannot run is refused before anything is reached,
// naming the field.
func TestNewRefusesWhatItCannotRun(t *testing.T) {
	// Nothing listens there: none of these cases gets as far as Redis.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	valid := worker.Config{Redis: rdb, API: cropapi.Config{AppKey: "k", AppSecret: "s"}, Bucket: "crops"}
	for _, tc := range []struct {
		name   string
		change func(*worker.Config)
		want   string
	}{
		{"no Redis", func(c *worker.Config) { c.Redis = nil }, "Config.Redis"},
		{"a tenant bucket that is the default one", func(c *worker.Config) { c.TenantBuckets = map[string][]string{"acme": {"crops"}} }, "Config.TenantBuckets"},
		{"a budget without a period", func(c *worker.Config) { c.TenantBudgets = map[string]string{"acme": "100"} }, "Config.TenantBudgets[acme]"},
		{"an unknown dedup scope", func(c *worker.Config) { c.DedupScope = "fleet" }, "Config.DedupScope"},
		{"an unknown dedup source", func(c *worker.Config) { c.DedupSource = "etag" }, "Config.DedupSource"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.change(&cfg)
			w, err := worker.New(context.Background(), cfg)
			require.Error(t, err)
			assert.Nil(t, w)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// The public worker, embedded: ready once its dependencies are, it crops a
// request submitted through the producer (fed from the backlog by its own
// feeder), measures it on the given registry, and when its context ends it
// drains and returns.
func TestWorkerCropsThenDrains(t *testing.T) {
	rs := testenv.Redis(t)
	minio := testenv.MinIO(t)
	_, bucket := testenv.MinIOBucket(t, minio)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	emu, err := cropapitest.New(cropapitest.Config{AppKey: "k", AppSecret: "s", Rate: 100})
	require.NoError(t, err)
	api := httptest.NewServer(emu)
	t.Cleanup(api.Close)
	images := httptest.NewServer(http.FileServer(http.Dir(filepath.Join("..", "testdata", "images"))))
	t.Cleanup(images.Close)

	local := cropapi.Limits{AllowPrivateHosts: true}
	reg := prometheus.NewRegistry()
	ctx := context.Background()
	w, err := worker.New(ctx, worker.Config{
		Redis: rdb,
		API:   cropapi.Config{BaseURL: api.URL, AppKey: "k", AppSecret: "s", Limits: local},
		S3: storage.S3Config{Endpoint: minio.Endpoint(), UsePathStyle: true,
			AccessKeyID: minio.AccessKey(), SecretAccessKey: minio.SecretKey()},
		Bucket:          bucket,
		ResultHosts:     []string{"127.0.0.1"},
		ResultAllowHTTP: true,
		Concurrency:     2,
		ShutdownTimeout: 5 * time.Second,
		Metrics:         reg,
	})
	require.NoError(t, err)
	require.NoError(t, w.Ready(ctx))

	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	var runErr error
	go func() { defer close(ran); runErr = w.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-ran
	})

	p := producer.New(rdb, producer.Config{Backlog: true, Task: tasks.Options{Limits: local}})
	t.Cleanup(func() { _ = p.Close() })
	res := p.Enqueue(ctx, tasks.Request{RequestID: "embedded-1", ImageURL: images.URL + "/mug-square.png", Params: tasks.Params{TargetWidth: 300, TargetHeight: 200}})
	require.NoError(t, res.Err)
	var rec status.Record
	require.Eventually(t, func() bool {
		rec, err = p.Get(ctx, "embedded-1")
		return err == nil && rec.State.Terminal()
	}, 60*time.Second, 50*time.Millisecond)
	require.Equal(t, status.Succeeded, rec.State, "%s %s", rec.ErrorCode, rec.ErrorMessage)
	assert.Equal(t, bucket, rec.Stored.Bucket)
	assert.Equal(t, int64(1), emu.Stats().Usage)

	families, err := reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	assert.Contains(t, names, "cropq_api_calls_total", "the worker measures on the registry it was given")

	assert.False(t, w.Draining())
	stop()
	select {
	case <-ran:
		require.NoError(t, runErr, "a clean drain")
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	assert.True(t, w.Draining(), "a drained worker says so to its readiness probe")
}
