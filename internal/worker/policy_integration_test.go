package worker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/localsvc"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

// The retry policy, row by row, through the real path: worker ↔ emulator
// (faults injected) ↔ Redis, with MinIO behind the copy.

// local accepts image URLs on this machine, where the tests serve them.
var local = cropapi.Limits{AllowPrivateHosts: true}

const (
	checkInterval = 100 * time.Millisecond
	backoffBase   = 100 * time.Millisecond
	backoffCap    = 400 * time.Millisecond
)

type policyRig struct {
	rdb      *redis.Client
	emu      *cropapitest.Server
	statuses *records.Store
	s3       *s3.Client
	bucket   string
	images   string
	client   *asynq.Client
	inputs   *storage.Inputs
	handler  *worker.Handler
	spec     rowSpec
	stop     func() // stops the running worker server
}

type rowSpec struct {
	emu      cropapitest.Config
	quota    *quota.Config
	noBucket bool // the bucket appears later (storage outage)
	// storageWait, when set, is the storage gate's StorageMaxWait (checks
	// every quarter of it); the default waits 10 s.
	storageWait time.Duration
	// shutdownTimeout is the worker server's (default 5 s).
	shutdownTimeout time.Duration
	// clockSkew sets the worker's clock this far off the real one.
	clockSkew time.Duration
	// refuseCheckpoints, while true, makes the status store refuse the
	// checkpoint writes of paid answers (Redis refusing writes mid-call).
	refuseCheckpoints *atomic.Bool
	persistFor        time.Duration
	// quotaImpl, when set, is the handler's Quota (instead of quota).
	quotaImpl worker.Quota
}

// refusingStore is the real status store, refusing checkpoint writes while
// told to, as a Redis at its memory limit would.
type refusingStore struct {
	*records.Store
	refuse *atomic.Bool
}

var errOOM = errors.New("OOM command not allowed when used memory > 'maxmemory'")

func (s refusingStore) Transition(ctx context.Context, id string, u records.Update) (status.Record, error) {
	if s.refuse.Load() && u.Checkpoint != nil {
		return status.Record{}, errOOM
	}
	return s.Store.Transition(ctx, id, u)
}

func newPolicyRig(t *testing.T, minio *localsvc.MinIO, spec rowSpec) *policyRig {
	t.Helper()
	r := &policyRig{}
	srv := testenv.Redis(t)
	r.rdb = redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = r.rdb.Close() })

	spec.emu.AppKey, spec.emu.AppSecret = "k", "s"
	emu, err := cropapitest.New(spec.emu)
	require.NoError(t, err)
	r.emu = emu
	api := httptest.NewServer(emu)
	t.Cleanup(api.Close)
	r.images = serveImages(t)

	var bucket string
	r.s3, bucket = testenv.MinIOBucket(t, minio)
	r.bucket = bucket
	if spec.noBucket {
		_, err := r.s3.DeleteBucket(context.Background(), &s3.DeleteBucketInput{Bucket: aws.String(bucket)})
		require.NoError(t, err)
	}
	now := func() time.Time { return time.Now().Add(spec.clockSkew) }
	copier, err := results.New(r.s3, results.Config{Bucket: bucket, ResultHosts: []string{"127.0.0.1"}, AllowHTTP: true, Now: now})
	require.NoError(t, err)
	client, err := cropapi.NewClient(cropapi.Config{BaseURL: api.URL, AppKey: "k", AppSecret: "s", Limits: local})
	require.NoError(t, err)
	r.statuses = records.NewStore(r.rdb, status.Config{})
	hcfg := worker.HandlerConfig{Limits: local, StorageMaxWait: spec.storageWait, StorageCheckInterval: spec.storageWait / 4, Now: now}
	r.inputs, err = storage.NewInputs(r.s3, storage.InputsConfig{Bucket: bucket})
	require.NoError(t, err)
	hcfg.Inputs = r.inputs
	if spec.quota != nil {
		q := *spec.quota
		q.Account = "k"
		hcfg.Quota = quota.New(r.rdb, q)
	}
	hcfg.PersistFor = spec.persistFor
	if spec.quotaImpl != nil {
		hcfg.Quota = spec.quotaImpl
	}
	var st worker.StatusStore = r.statuses
	if spec.refuseCheckpoints != nil {
		st = refusingStore{Store: r.statuses, refuse: spec.refuseCheckpoints}
	}
	r.handler, r.spec = worker.NewHandler(client, copier, st, hcfg), spec
	r.startServer(t)
	r.client = asynq.NewClientFromRedisClient(r.rdb)
	return r
}

// startServer runs a worker server with the rig's handler until r.stop or
// the end of the test.
func (r *policyRig) startServer(t *testing.T) {
	t.Helper()
	shutdown := r.spec.shutdownTimeout
	if shutdown <= 0 {
		shutdown = 5 * time.Second
	}
	ws := worker.NewServer(r.rdb, worker.ServerConfig{Concurrency: 4, DelayedTaskCheckInterval: checkInterval,
		ShutdownTimeout: shutdown, Backoff: worker.Backoff{Base: backoffBase, Cap: backoffCap, RateLimitDelay: backoffBase}}, r.handler)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ws.Run(ctx) }()
	var once sync.Once
	r.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(r.stop)
}

func serveImages(t *testing.T) string {
	t.Helper()
	good, err := os.ReadFile(filepath.Join("..", "..", "testdata", "images", "mug-square.png"))
	require.NoError(t, err)
	var tiny bytes.Buffer
	require.NoError(t, png.Encode(&tiny, image.NewGray(image.Rect(0, 0, 60, 60))))
	mux := http.NewServeMux()
	mux.HandleFunc("/good.png", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(good) })
	mux.HandleFunc("/tiny.png", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(tiny.Bytes()) })
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s.URL
}

func (r *policyRig) enqueue(t *testing.T, id, image string, maxRetry int) {
	t.Helper()
	p := tasks.CropPayload{Request: tasks.Request{RequestID: id, ImageURL: r.images + "/" + image, Params: tasks.Params{TargetWidth: 300, TargetHeight: 200}}}
	task, opts, err := tasks.NewCropTask(p, tasks.Options{MaxRetry: maxRetry, Limits: local})
	require.NoError(t, err)
	_, _, err = r.statuses.Create(context.Background(), status.Record{RequestID: id, Source: p.Source()})
	require.NoError(t, err)
	_, err = r.client.Enqueue(task, opts...)
	require.NoError(t, err)
}

// enqueueClaimChecked stores a sample image in the inputs store and enqueues
// a request that refers to it (claim check), canceled before its task is
// enqueued when cancel is set; it returns the input's reference.
func (r *policyRig) enqueueClaimChecked(t *testing.T, id string, cancel bool) storage.Input {
	t.Helper()
	ctx := context.Background()
	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "images", "mug-square.png"))
	require.NoError(t, err)
	ref, err := r.inputs.Put(ctx, id, img)
	require.NoError(t, err)
	p := tasks.CropPayload{Request: tasks.Request{RequestID: id, Params: tasks.Params{TargetWidth: 300, TargetHeight: 200}},
		Input: &tasks.InputRef{Bucket: ref.Bucket, Key: ref.Key, Size: ref.Size, SHA256: ref.SHA256}}
	task, opts, err := tasks.NewCropTask(p, tasks.Options{MaxRetry: 3, Limits: local})
	require.NoError(t, err)
	_, _, err = r.statuses.Create(ctx, status.Record{RequestID: id, Source: p.Source()})
	require.NoError(t, err)
	if cancel {
		_, err = r.statuses.Cancel(ctx, id)
		require.NoError(t, err)
	}
	_, err = r.client.Enqueue(task, opts...)
	require.NoError(t, err)
	return ref
}

func (r *policyRig) await(t *testing.T, id string, cond func(status.Record) bool, what string) status.Record {
	t.Helper()
	var rec status.Record
	require.Eventually(t, func() bool {
		got, err := r.statuses.Get(context.Background(), id)
		if err != nil {
			return false
		}
		rec = got
		return cond(rec)
	}, 30*time.Second, 20*time.Millisecond, "%s: %s; last record: %v", id, what, lastRecord{&rec})
	return rec
}

// lastRecord prints the record as it is when a failure message is
// formatted, not when the assertion was called.
type lastRecord struct{ rec *status.Record }

func (l lastRecord) String() string { return fmt.Sprintf("%+v", *l.rec) }

func terminal(rec status.Record) bool { return rec.State.Terminal() }

// states lists the history's states, e.g. "running retrying running failed".
func states(rec status.Record) string {
	var s []string
	for _, h := range rec.History {
		if h.State != status.Queued {
			s = append(s, string(h.State))
		}
	}
	return strings.Join(s, " ")
}

// retryGaps are the times from each "retrying" to the next "running".
func retryGaps(rec status.Record) []time.Duration {
	var gaps []time.Duration
	for i, h := range rec.History {
		if h.State == status.Retrying && i+1 < len(rec.History) {
			gaps = append(gaps, rec.History[i+1].At.Sub(h.At))
		}
	}
	return gaps
}

func TestRetryPolicyThroughTheRealPath(t *testing.T) {
	minio := testenv.MinIO(t)

	t.Run("rate limited without the shared quota: retried, never a failure", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{Rate: 2, Burst: 1}})
		for i := range 4 {
			// MaxRetry 1: a 501 counted as a failure would leave one more
			// attempt, and a second would end the request failed.
			r.enqueue(t, fmt.Sprintf("rl-%d", i), "good.png", 1)
		}
		for i := range 4 {
			rec := r.await(t, fmt.Sprintf("rl-%d", i), terminal, "finish")
			assert.Equal(t, status.Succeeded, rec.State, states(rec))
			assert.Equal(t, 1, rec.PaidCalls)
			assert.Equal(t, 1, rec.Attempt, "rate limits do not spend attempts")
		}
		st := r.emu.Stats()
		assert.Positive(t, st.Calls["501"], "four at once against 2/s, burst 1, must meet the quota")
		assert.Equal(t, int64(4), st.Usage)
	})

	t.Run("rate limited with the shared quota: no 501 at all", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{Rate: 2, Burst: 1},
			quota: &quota.Config{Rate: 1.6, Burst: 1, MaxWait: 10 * time.Second}})
		for i := range 4 {
			r.enqueue(t, fmt.Sprintf("q-%d", i), "good.png", 1)
		}
		for i := range 4 {
			rec := r.await(t, fmt.Sprintf("q-%d", i), terminal, "finish")
			assert.Equal(t, status.Succeeded, rec.State, states(rec))
		}
		st := r.emu.Stats()
		assert.Zero(t, st.Calls["501"])
		assert.Equal(t, int64(4), st.Calls["200"])
	})

	t.Run("no token within the wait bound: handed back with the limiter's delay, not a failure", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{Rate: 100},
			quota: &quota.Config{Rate: 0.5, Burst: 1, MaxWait: 10 * time.Millisecond}})
		r.enqueue(t, "d-0", "good.png", 1)
		r.enqueue(t, "d-1", "good.png", 1)
		var deferred status.Record
		for _, id := range []string{"d-0", "d-1"} {
			rec := r.await(t, id, terminal, "finish")
			assert.Equal(t, status.Succeeded, rec.State, states(rec))
			for _, h := range rec.History {
				if h.ErrorCode == "quota" {
					deferred = rec
				}
			}
		}
		require.NotEmpty(t, deferred.RequestID, "one of two tasks at 0.5/s must have been handed back")
		var waited time.Duration
		for _, gap := range retryGaps(deferred) {
			waited += gap
		}
		// Handed back for the limiter's retry-after (the next token is ~2 s
		// away at 0.5/s), not for the 100 ms backoff.
		assert.GreaterOrEqual(t, waited, 1500*time.Millisecond)
		assert.Equal(t, 1, deferred.Attempt, "hand-backs do not spend attempts")
		assert.Equal(t, int64(2), r.emu.Stats().Usage)
	})

	t.Run("a claim-checked input is removed once its request has failed for good", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{Faults: cropapitest.Faults{P1002: 1}}})
		ref := r.enqueueClaimChecked(t, "claim", false)

		rec := r.await(t, "claim", terminal, "fail")
		assert.Equal(t, status.Failed, rec.State)
		assert.Equal(t, "1002", rec.ErrorCode)
		_, err := r.inputs.Get(context.Background(), ref)
		require.ErrorAs(t, err, new(*storage.InputError), "the input is gone")
	})

	t.Run("a worker shut down during the last attempt leaves the request to the next one", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{Faults: cropapitest.Faults{P500: 1}}, shutdownTimeout: 100 * time.Millisecond})
		r.enqueue(t, "sd", "good.png", 1)
		r.await(t, "sd", func(rec status.Record) bool { return rec.State == status.Retrying && rec.ErrorCode == "500" }, "spend its retry on a 500")
		r.emu.SetFaults(cropapitest.Faults{Latency: 10 * time.Second}) // the last attempt hangs in the API call
		r.await(t, "sd", func(rec status.Record) bool { return rec.State == status.Running && rec.Attempt == 2 }, "start its last attempt")
		r.stop() // SIGTERM: asynq gives up after 100 ms and puts the task back

		// The abandoned handler records why it stopped once its context ends.
		rec := r.await(t, "sd", func(rec status.Record) bool { return rec.State != status.Running }, "record the interruption")
		assert.Equal(t, status.Retrying, rec.State, "interrupted, not failed: %s", states(rec))
		r.emu.SetFaults(cropapitest.Faults{})
		r.startServer(t)
		rec = r.await(t, "sd", terminal, "finish on the next worker")
		assert.Equal(t, status.Succeeded, rec.State, states(rec))
	})

	t.Run("a key template that cannot render fails before paying, even from an older producer", func(t *testing.T) {
		// Queued as a producer before the entrances rendered templates would
		// have: straight into asynq, past NewCropTask's validation.
		r := newPolicyRig(t, minio, rowSpec{})
		for i, tmpl := range []string{"../../x/{requestId}.{ext}", "/abs/{requestId}.{ext}", "a/{sku}/{requestId}.{ext}"} {
			id := fmt.Sprintf("kt-%d", i)
			p := tasks.CropPayload{Version: tasks.PayloadVersion, Request: tasks.Request{RequestID: id, ImageURL: r.images + "/good.png",
				Params: tasks.Params{TargetWidth: 300, TargetHeight: 200, KeyTemplate: tmpl}}}
			b, err := json.Marshal(p)
			require.NoError(t, err)
			_, _, err = r.statuses.Create(context.Background(), status.Record{RequestID: id, Source: "url"})
			require.NoError(t, err)
			_, err = r.client.Enqueue(asynq.NewTask(tasks.TypeCrop, b), asynq.TaskID(id), asynq.Queue(tasks.DefaultQueue), asynq.MaxRetry(3))
			require.NoError(t, err)
			rec := r.await(t, id, terminal, "fail")
			assert.Equal(t, status.Failed, rec.State, states(rec))
			assert.Equal(t, "validation", rec.ErrorCode)
			assert.Contains(t, rec.ErrorMessage, "keyTemplate")
			assert.Zero(t, rec.PaidCalls, "refused before the call")
			assert.Equal(t, 1, rec.Attempt, "permanent: not retried")
		}
		assert.Zero(t, r.emu.Stats().Usage, "nothing paid")
	})

	t.Run("a request's own bucket that does not exist fails before paying", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{})
		p := tasks.CropPayload{Request: tasks.Request{RequestID: "own-bucket", ImageURL: r.images + "/good.png",
			Params: tasks.Params{TargetWidth: 300, TargetHeight: 200, Bucket: "no-such-bucket-here"}}}
		task, opts, err := tasks.NewCropTask(p, tasks.Options{MaxRetry: 3, Limits: local})
		require.NoError(t, err)
		_, _, err = r.statuses.Create(context.Background(), status.Record{RequestID: "own-bucket", Source: "url"})
		require.NoError(t, err)
		_, err = r.client.Enqueue(task, opts...)
		require.NoError(t, err)
		rec := r.await(t, "own-bucket", terminal, "fail")
		assert.Equal(t, status.Failed, rec.State, states(rec))
		assert.Equal(t, "bucket", rec.ErrorCode)
		assert.Zero(t, rec.PaidCalls)
		assert.Equal(t, 1, rec.Attempt, "permanent: not retried")
		assert.Zero(t, r.emu.Stats().Usage, "nothing paid")
	})

	t.Run("a worker whose clock runs ahead of the URLs' life pays once and stores", func(t *testing.T) {
		// Results live 5 minutes; this worker's clock is 10 minutes ahead:
		// by its clock every URL has expired when it arrives. The vendor's
		// answer decides, so it downloads, and pays once.
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{ResultTTL: 5 * time.Minute}, clockSkew: 10 * time.Minute})
		for i := range 3 {
			r.enqueue(t, fmt.Sprintf("ahead-%d", i), "good.png", 3)
		}
		for i := range 3 {
			rec := r.await(t, fmt.Sprintf("ahead-%d", i), terminal, "finish")
			assert.Equal(t, status.Succeeded, rec.State, states(rec))
			assert.Equal(t, 1, rec.PaidCalls)
			assert.Zero(t, rec.ExpiredRecrops)
			require.NotNil(t, rec.Stored)
		}
		assert.Equal(t, int64(3), r.emu.Stats().Usage, "one paid call per image")
	})

	t.Run("a worker whose clock runs behind pays once and stores", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{ResultTTL: 5 * time.Minute}, clockSkew: -10 * time.Minute})
		r.enqueue(t, "behind", "good.png", 3)
		rec := r.await(t, "behind", terminal, "finish")
		assert.Equal(t, status.Succeeded, rec.State, states(rec))
		assert.Equal(t, 1, rec.PaidCalls, "a clock behind changes nothing while URLs live")
	})

	t.Run("a paid answer Redis refused to checkpoint is kept and reused, not paid again", func(t *testing.T) {
		refuse := &atomic.Bool{}
		refuse.Store(true)
		r := newPolicyRig(t, minio, rowSpec{refuseCheckpoints: refuse, persistFor: 300 * time.Millisecond})
		r.enqueue(t, "kept", "good.png", 5)
		// The first attempt pays, cannot checkpoint, and fails; it kept the
		// answer. Redis takes writes again before the retry.
		r.await(t, "kept", func(rec status.Record) bool { return rec.State == status.Retrying }, "fail its first attempt")
		refuse.Store(false)
		rec := r.await(t, "kept", terminal, "finish")
		assert.Equal(t, status.Succeeded, rec.State, states(rec))
		assert.Equal(t, 1, rec.PaidCalls, "the kept answer was recorded, not paid again")
		assert.Equal(t, int64(1), r.emu.Stats().Usage)
	})

	t.Run("while Redis refuses checkpoints, nothing more is paid for", func(t *testing.T) {
		refuse := &atomic.Bool{}
		refuse.Store(true)
		q := newGatedQuota(1)
		r := newPolicyRig(t, minio, rowSpec{refuseCheckpoints: refuse, persistFor: 300 * time.Millisecond, quotaImpl: q})
		// The first pays and cannot checkpoint; the second, already
		// running and waiting for its token meanwhile, must not pay.
		r.enqueue(t, "refused-1", "good.png", 5)
		r.await(t, "refused-1", func(rec status.Record) bool { return rec.State == status.Retrying }, "fail its first attempt")
		r.enqueue(t, "refused-2", "good.png", 5)
		<-q.waiting // refused-2 holds its token wait
		q.openGate()
		rec := r.await(t, "refused-2", func(rec status.Record) bool { return rec.State == status.Retrying }, "be handed back")
		assert.Equal(t, "status_unavailable", rec.ErrorCode)
		assert.Equal(t, int64(1), r.emu.Stats().Usage, "only the first paid")
		refuse.Store(false)
		for _, id := range []string{"refused-1", "refused-2"} {
			rec := r.await(t, id, terminal, "finish")
			assert.Equal(t, status.Succeeded, rec.State, states(rec))
			assert.Equal(t, 1, rec.PaidCalls, id)
		}
		assert.Equal(t, int64(2), r.emu.Stats().Usage, "one paid call per request")
	})

	t.Run("kept answers are recorded as soon as Redis takes writes", func(t *testing.T) {
		refuse := &atomic.Bool{}
		refuse.Store(true)
		// Retries far off: the first attempt fails and nothing runs again
		// before FlushKept.
		r := newPolicyRig(t, minio, rowSpec{refuseCheckpoints: refuse, persistFor: 300 * time.Millisecond})
		r.enqueue(t, "flush", "good.png", 5)
		r.await(t, "flush", func(rec status.Record) bool { return rec.State == status.Retrying }, "fail its first attempt")
		r.stop()
		assert.Zero(t, r.handler.FlushKept(context.Background()), "nothing is recorded while Redis refuses")
		refuse.Store(false)
		assert.Equal(t, 1, r.handler.FlushKept(context.Background()))
		rec, err := r.statuses.Get(context.Background(), "flush")
		require.NoError(t, err)
		require.True(t, rec.Checkpoint.Usable(), "any worker's next attempt finds the paid answer")
		assert.Equal(t, 1, rec.PaidCalls)
		assert.Equal(t, status.Retrying, rec.State, "attached, not moved")
		assert.Zero(t, r.handler.FlushKept(context.Background()), "recorded once")
	})

	t.Run("a task whose request was canceled stops unpaid and removes its input", func(t *testing.T) {
		// The producer cancels the record but cannot delete a task a worker
		// has already fetched: the worker then tidies up itself.
		r := newPolicyRig(t, minio, rowSpec{})
		ctx := context.Background()
		ref := r.enqueueClaimChecked(t, "gone", true)

		insp := asynq.NewInspectorFromRedisClient(r.rdb)
		require.Eventually(t, func() bool {
			info, err := insp.GetTaskInfo(tasks.DefaultQueue, "gone")
			return err == nil && info.State == asynq.TaskStateCompleted
		}, 30*time.Second, 20*time.Millisecond, "the task completes without work")
		_, err := r.inputs.Get(ctx, ref)
		require.ErrorAs(t, err, new(*storage.InputError), "the input is gone")
		rec, err := r.statuses.Get(ctx, "gone")
		require.NoError(t, err)
		assert.Equal(t, status.Canceled, rec.State)
		assert.Zero(t, r.emu.Stats().Calls["200"], "nothing paid")
	})

	t.Run("a task queued with both image sources before they were refused still succeeds", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{})
		img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "images", "mug-square.png"))
		require.NoError(t, err)
		payload, err := json.Marshal(map[string]any{"v": tasks.PayloadVersion, "requestId": "legacy",
			"imageUrl": r.images + "/tiny.png", "imageBase64": base64.StdEncoding.EncodeToString(img),
			"targetWidth": 300, "targetHeight": 200})
		require.NoError(t, err)
		_, _, err = r.statuses.Create(context.Background(), status.Record{RequestID: "legacy", Source: "base64"})
		require.NoError(t, err)
		_, err = r.client.Enqueue(asynq.NewTask(tasks.TypeCrop, payload), asynq.TaskID("legacy"), asynq.Queue(tasks.DefaultQueue))
		require.NoError(t, err)
		rec := r.await(t, "legacy", terminal, "finish")
		assert.Equal(t, status.Succeeded, rec.State, "%s %s", rec.ErrorCode, rec.ErrorMessage)
		assert.Equal(t, int64(1), r.emu.Stats().Usage, "base64 was sent (the URL's image is too small to crop)")
	})

	t.Run("500: retried with backoff up to MaxRetry, then failed", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{Faults: cropapitest.Faults{P500: 1}}})
		r.enqueue(t, "e-500", "good.png", 2)
		rec := r.await(t, "e-500", terminal, "fail")
		assert.Equal(t, status.Failed, rec.State)
		assert.Equal(t, "500", rec.ErrorCode)
		assert.Equal(t, 3, rec.Attempt)
		assert.Equal(t, "running retrying running retrying running failed", states(rec))
		gaps := retryGaps(rec)
		require.Len(t, gaps, 2)
		for i, gap := range gaps {
			// Full jitter in (0, min(cap, base·2^i)], then up to one check
			// interval, then asynq's idle poll of an empty queue (1 s).
			upper := min(backoffBase<<i, backoffCap) + checkInterval + time.Second + 300*time.Millisecond
			assert.LessOrEqual(t, gap, upper, "retry %d", i+1)
		}
		assert.Equal(t, int64(3), r.emu.Stats().Calls["500"])
		assert.Zero(t, r.emu.Stats().Usage)
	})

	permanent := []struct {
		name, image, code string
		faults            cropapitest.Faults
	}{
		{"1002 risk filter", "good.png", "1002", cropapitest.Faults{P1002: 1}},
		{"700 image too small", "tiny.png", "700", cropapitest.Faults{}},
		{"1000 sensitive", "good.png?sensitive", "1000", cropapitest.Faults{}},
	}
	for _, p := range permanent {
		t.Run(p.name+": failed at once, no retry", func(t *testing.T) {
			r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{Faults: p.faults}})
			r.enqueue(t, "perm", p.image, 5)
			rec := r.await(t, "perm", terminal, "fail")
			assert.Equal(t, status.Failed, rec.State)
			assert.Equal(t, p.code, rec.ErrorCode)
			assert.Equal(t, 1, rec.Attempt)
			assert.Equal(t, "running failed", states(rec))
			assert.Equal(t, int64(1), r.emu.Stats().Calls[p.code])
		})
	}

	t.Run("storage error: retried without a new paid call", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{}, noBucket: true})
		r.enqueue(t, "s3", "good.png", 10)
		r.await(t, "s3", func(rec status.Record) bool { return rec.Attempt >= 2 && rec.ErrorCode == "storage_upload" },
			"fail its copy twice")
		_, err := r.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(r.bucket)})
		require.NoError(t, err)
		rec := r.await(t, "s3", terminal, "finish")
		assert.Equal(t, status.Succeeded, rec.State, states(rec))
		assert.Equal(t, 1, rec.PaidCalls, "the checkpointed result was reused")
		assert.Equal(t, int64(1), r.emu.Stats().Usage)
	})

	t.Run("bucket unreachable: later crops are not paid for, handed back, never a failure", func(t *testing.T) {
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{}, noBucket: true, storageWait: 200 * time.Millisecond})
		r.enqueue(t, "gate-0", "good.png", 10)
		r.await(t, "gate-0", func(rec status.Record) bool { return rec.ErrorCode == "storage_upload" }, "fail its upload")
		ids := []string{"gate-1", "gate-2", "gate-3"}
		for _, id := range ids {
			r.enqueue(t, id, "good.png", 1) // MaxRetry 1: hand-backs must not spend it
		}
		for _, id := range ids {
			r.await(t, id, func(rec status.Record) bool { return rec.ErrorCode == "storage_unavailable" }, "be handed back unpaid")
		}
		assert.Equal(t, int64(1), r.emu.Stats().Usage, "only the crop made before the outage was known is paid for")

		_, err := r.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(r.bucket)})
		require.NoError(t, err)
		for _, id := range append([]string{"gate-0"}, ids...) {
			rec := r.await(t, id, terminal, "finish")
			assert.Equal(t, status.Succeeded, rec.State, states(rec))
			assert.Equal(t, 1, rec.PaidCalls, id)
			if id != "gate-0" {
				assert.Equal(t, 1, rec.Attempt, "%s: hand-backs do not spend attempts", id)
			}
		}
		assert.Equal(t, int64(4), r.emu.Stats().Usage, "one paid call per image")
	})

	t.Run("a checkpointed crop waits out a bucket outage without spending its retries", func(t *testing.T) {
		// MaxRetry 2: the failed upload spends one; copies of the checkpoint
		// tried while the bucket is still away would spend the rest.
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{}, noBucket: true, storageWait: 200 * time.Millisecond})
		r.enqueue(t, "wait-out", "good.png", 2)
		r.await(t, "wait-out", func(rec status.Record) bool {
			n := 0
			for _, h := range rec.History {
				if h.ErrorCode == "storage_unavailable" {
					n++
				}
			}
			return n >= 3
		}, "be handed back three times while the bucket is away")
		_, err := r.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(r.bucket)})
		require.NoError(t, err)
		rec := r.await(t, "wait-out", terminal, "finish")
		assert.Equal(t, status.Succeeded, rec.State, states(rec))
		assert.Equal(t, 2, rec.Attempt, "only the failed upload spent a retry")
		assert.Equal(t, 1, rec.PaidCalls)
	})

	t.Run("a hand-back on the last attempt ends the request failed, never stuck", func(t *testing.T) {
		// asynq archives a task whose retries are spent, whatever IsFailure
		// says, so the record must not be left "retrying". Results live 1 ms:
		// every download of them is refused as expired, so the second
		// attempt must pay again, and the gate (no bucket) stops it.
		r := newPolicyRig(t, minio, rowSpec{emu: cropapitest.Config{ResultTTL: time.Millisecond}, noBucket: true, storageWait: 200 * time.Millisecond})
		r.enqueue(t, "last", "good.png", 1)
		rec := r.await(t, "last", terminal, "end")
		assert.Equal(t, status.Failed, rec.State, states(rec))
		assert.Equal(t, "storage_unavailable", rec.ErrorCode)
		assert.Equal(t, 2, rec.Attempt)
		assert.Equal(t, "running cropped retrying running failed", states(rec))
		assert.Equal(t, int64(1), r.emu.Stats().Usage, "the outage cost one paid call, not two")
		// asynq archives the task once the handler has returned, a moment
		// after the record ended: await it.
		insp := asynq.NewInspectorFromRedisClient(r.rdb)
		assert.Eventually(t, func() bool {
			info, err := insp.GetTaskInfo(tasks.DefaultQueue, "last")
			return err == nil && info.State == asynq.TaskStateArchived
		}, 10*time.Second, 20*time.Millisecond, "the task whose retries are spent is archived")
	})
}

// The whole pipeline on a real 3-node Redis Cluster: asynq's queue keys,
// the status records, batch counts, events and the shared quota all live on
// several nodes.
func TestPipelineOnRedisCluster(t *testing.T) {
	cluster := testenv.RedisCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	minio := testenv.MinIO(t)
	s3c, bucket := testenv.MinIOBucket(t, minio)

	emu, err := cropapitest.New(cropapitest.Config{AppKey: "k", AppSecret: "s", Rate: 100})
	require.NoError(t, err)
	api := httptest.NewServer(emu)
	t.Cleanup(api.Close)
	images := serveImages(t)
	client, err := cropapi.NewClient(cropapi.Config{BaseURL: api.URL, AppKey: "k", AppSecret: "s", Limits: local})
	require.NoError(t, err)
	copier, err := results.New(s3c, results.Config{Bucket: bucket, ResultHosts: []string{"127.0.0.1"}, AllowHTTP: true})
	require.NoError(t, err)
	statuses := records.NewStore(rdb, status.Config{})
	h := worker.NewHandler(client, copier, statuses, worker.HandlerConfig{Limits: local, Quota: quota.New(rdb, quota.Config{Account: "k", Rate: 50, Adaptive: true})})
	ws := worker.NewServer(rdb, worker.ServerConfig{Concurrency: 4, DelayedTaskCheckInterval: checkInterval, ShutdownTimeout: 5 * time.Second}, h)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ws.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	// Half straight into asynq, half through the backlog and a feeder, in
	// two tenants and two lanes: every key of each keeps to its slot.
	direct := producer.New(rdb, producer.Config{Task: tasks.Options{Limits: local}})
	t.Cleanup(func() { _ = direct.Close() })
	bl := backlog.New(rdb, backlog.Config{})
	p := producer.New(rdb, producer.Config{Task: tasks.Options{Limits: local}, Backlog: true})
	t.Cleanup(func() { _ = p.Close() })
	feeder := bl.NewFeeder(backlog.TaskEnqueuer{Client: asynq.NewClientFromRedisClient(rdb), Options: tasks.Options{Limits: local}, Records: statuses},
		backlog.FeederConfig{MinWindow: 2, Tick: 20 * time.Millisecond})
	wg.Add(1)
	go func() { defer wg.Done(); _ = feeder.Run(ctx) }()
	var reqs []tasks.Request
	for i := range 6 {
		reqs = append(reqs, tasks.Request{RequestID: fmt.Sprintf("cl-%d", i), ImageURL: images + "/good.png", Params: tasks.Params{TargetWidth: 300,
			TargetHeight: 200, BatchID: "cl-batch"}})
	}
	for _, res := range direct.EnqueueBatch(context.Background(), reqs[:3]) {
		require.Equal(t, producer.Enqueued, res.Outcome, "%v", res.Err)
	}
	reqs[4].Tenant, reqs[5].Priority = "acme", "urgent"
	for _, res := range p.EnqueueBatch(context.Background(), reqs[3:]) {
		require.Equal(t, producer.Enqueued, res.Outcome, "%v", res.Err)
	}
	require.Eventually(t, func() bool {
		c, err := p.BatchCounts(context.Background(), "", "cl-batch")
		a, aerr := p.BatchCounts(context.Background(), "acme", "cl-batch")
		return err == nil && aerr == nil && c[status.Succeeded] == 5 && a[status.Succeeded] == 1
	}, 60*time.Second, 50*time.Millisecond, "all six crops succeed")
	size, err := bl.Size(context.Background())
	require.NoError(t, err)
	assert.Zero(t, size, "the backlog drained")
	for _, r := range reqs {
		rec, err := p.Get(context.Background(), r.RequestID)
		require.NoError(t, err)
		assert.Equal(t, status.Succeeded, rec.State)
		assert.Equal(t, 1, rec.PaidCalls)
	}
	events, err := rdb.XLen(context.Background(), statuses.EventsKey()).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(6), events)
	assert.Equal(t, int64(6), emu.Stats().Usage)
}
