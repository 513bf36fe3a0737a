package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	_ "image/jpeg" // decode results
	_ "image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/imageformat"
	"github.com/cropq/cropq/internal/localstack"
	"github.com/cropq/cropq/internal/localsvc"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
	"github.com/cropq/cropq/webhook"
)

// The end-to-end tests run the cropq binaries as real processes (emulator,
// worker, enqueue, status) against a real redis-server and MinIO.

// binaries are cmd/cropq and cmd/cropq-dev (the emulator, dev), built once
// per test binary.
type binaries struct {
	once sync.Once
	dir  string
	err  error
}

var built binaries

func (b *binaries) path(t *testing.T, name string) string {
	t.Helper()
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "cropq-bin-*"); b.err == nil {
			b.err = localstack.Build(context.Background(), b.dir, "cropq", "cropq-dev")
		}
	})
	require.NoError(t, b.err)
	return filepath.Join(b.dir, name)
}

// cropqBinary is the production binary, cmd/cropq.
func cropqBinary(t *testing.T) string { return built.path(t, "cropq") }

// cropqDevBinary is cmd/cropq-dev: the emulator and `dev`.
func cropqDevBinary(t *testing.T) string { return built.path(t, "cropq-dev") }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// stack is one isolated system: its own Redis, MinIO, emulator and worker.
type stack struct {
	t       *testing.T
	bin     string // cmd/cropq
	devBin  string // cmd/cropq-dev: the emulator
	env     []string
	redis   *localsvc.Redis
	minio   *localsvc.MinIO
	rdb     *redis.Client
	s3      *s3.Client
	bucket  string
	emuURL  string
	images  string // base URL of testdata/images
	workers []*exec.Cmd
	procs   []*proc
}

// proc is a started cropq process and its output.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done <-chan struct{}
	p    *localstack.Process
}

// stop stops p and waits for it (then out is safe to read).
func (p *proc) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), localstack.StopTimeout)
	defer cancel()
	_ = p.p.Stop(ctx)
}

type stackOptions struct {
	resultTTL    time.Duration
	emulatorRate float64 // default 100/s
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	testenv.Needs(t, "an end-to-end stack")
	s := &stack{t: t, bin: cropqBinary(t), devBin: cropqDevBinary(t)}
	s.redis = testenv.Redis(t)
	s.minio = testenv.MinIO(t)
	s.s3, s.bucket = testenv.MinIOBucket(t, s.minio)
	s.rdb = redis.NewClient(&redis.Options{Addr: s.redis.Addr()})
	t.Cleanup(func() { _ = s.rdb.Close() })

	imgs := httptest.NewServer(http.FileServer(http.Dir(filepath.Join("..", "..", "testdata", "images"))))
	t.Cleanup(imgs.Close)
	s.images = imgs.URL

	emuAddr := freeAddr(t)
	s.emuURL = "http://" + emuAddr
	endpoints := localstack.Endpoints{Redis: s.redis, MinIO: s.minio, Bucket: s.bucket,
		APIURL: s.emuURL, AppKey: "e2e-key", AppSecret: "e2e-secret"}
	s.env = endpoints.Env(
		"AWS_REGION=us-east-1",
		"CROPQ_RETRY_BASE=300ms",
		"CROPQ_RETRY_CAP=1s",
		"CROPQ_DELAYED_CHECK_INTERVAL=200ms",
		"CROPQ_MAX_RETRY=20",
		"CROPQ_LOG_FORMAT=text",
	)
	rate := "100"
	if o.emulatorRate > 0 {
		rate = fmt.Sprint(o.emulatorRate)
	}
	args := []string{"emulator", "--addr", emuAddr, "--rate", rate}
	if o.resultTTL > 0 {
		args = append(args, "--result-ttl", o.resultTTL.String())
	}
	s.startDev("emulator", args...)
	s.awaitHTTP(s.emuURL + "/_emulator/stats")
	return s
}

// start runs a long-lived cropq process, stopped (SIGTERM, then waited for)
// at cleanup; its output goes to the test log on failure.
func (s *stack) start(name string, args ...string) *exec.Cmd {
	s.t.Helper()
	return s.startBinary(s.bin, name, args...)
}

// startDev is start for a cropq-dev process (the emulator).
func (s *stack) startDev(name string, args ...string) *exec.Cmd {
	s.t.Helper()
	return s.startBinary(s.devBin, name, args...)
}

func (s *stack) startBinary(bin, name string, args ...string) *exec.Cmd {
	s.t.Helper()
	var out bytes.Buffer
	lp := testenv.Start(s.t, localstack.Command{Bin: bin, Args: args, Env: s.env, Stdout: &out, Stderr: &out})
	p := &proc{name: name, cmd: lp.Cmd, out: &out, done: lp.Done(), p: lp}
	s.procs = append(s.procs, p)
	s.t.Cleanup(func() {
		p.stop()
		if s.t.Failed() {
			s.t.Logf("--- %s output:\n%s", name, out.String())
		}
	})
	return lp.Cmd
}

func (s *stack) startWorker(env ...string) {
	saved := s.env
	s.env = append(append([]string{}, s.env...), env...)
	s.workers = append(s.workers, s.start("worker", "worker", "--concurrency", "4"))
	s.env = saved
}

func (s *stack) awaitHTTP(url string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(s.t, localstack.AwaitHTTP(ctx, url))
}

// cropq runs a one-shot command and returns its stdout.
// apiDo sends an authorised JSON request to the HTTP API and returns the
// answer's status, Content-Type and body.
func apiDo(t *testing.T, method, url, token, body string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func (s *stack) cropq(args ...string) (string, error) {
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), s.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("cropq %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (s *stack) enqueueURL(id, image string, w, h int) string {
	s.t.Helper()
	out, err := s.cropq("enqueue", "--request-id", id, "--url", s.images+"/"+image, "--width", fmt.Sprint(w), "--height", fmt.Sprint(h))
	require.NoError(s.t, err)
	return out
}

func (s *stack) record(id string) status.Record {
	s.t.Helper()
	out, err := s.cropq("status", id, "--json")
	require.NoError(s.t, err)
	var r status.Record
	require.NoError(s.t, json.Unmarshal([]byte(out), &r))
	return r
}

// awaitState waits until id's record is in one of states.
func (s *stack) awaitState(id string, timeout time.Duration, states ...status.State) status.Record {
	s.t.Helper()
	st := records.NewStore(s.rdb, status.Config{})
	require.Eventually(s.t, func() bool {
		r, err := st.Get(context.Background(), id)
		if err != nil {
			return false
		}
		for _, want := range states {
			if r.State == want {
				return true
			}
		}
		return false
	}, timeout, 50*time.Millisecond, "request %s never reached %v", id, states)
	return s.record(id) // read back through the CLI, as an operator would
}

func (s *stack) stats() cropapitest.Stats {
	s.t.Helper()
	resp, err := http.Get(s.emuURL + "/_emulator/stats")
	require.NoError(s.t, err)
	defer resp.Body.Close()
	var st cropapitest.Stats
	require.NoError(s.t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

func (s *stack) object(key string) image.Config {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obj, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	require.NoError(s.t, err)
	defer obj.Body.Close()
	b, err := io.ReadAll(obj.Body)
	require.NoError(s.t, err)
	img, _, err := image.Decode(bytes.NewReader(b))
	require.NoError(s.t, err, "the stored object must be a whole image")
	return image.Config{Width: img.Bounds().Dx(), Height: img.Bounds().Dy()}
}

func TestE2ECropSucceeds(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.startWorker()
	out := s.enqueueURL("e2e-ok-1", firstImage(t), 800, 600)
	assert.Contains(t, out, "queued")

	rec := s.awaitState("e2e-ok-1", 60*time.Second, status.Succeeded, status.Failed)
	require.Equal(t, status.Succeeded, rec.State, "error: %s %s", rec.ErrorCode, rec.ErrorMessage)
	require.NotNil(t, rec.Stored)
	assert.Equal(t, s.bucket, rec.Stored.Bucket)
	assert.Equal(t, 1, rec.PaidCalls)
	size := s.object(rec.Stored.Key)
	assert.Equal(t, image.Config{Width: 800, Height: 600}, size)

	// Duplicate request id: refused as known, never a second paid call.
	out = s.enqueueURL("e2e-ok-1", firstImage(t), 800, 600)
	assert.Contains(t, out, "already known")
	assert.Equal(t, int64(1), s.stats().Usage)

	// A graceful stop is a success: exit status 0, so that an orchestrator
	// does not count every rollout as a crash.
	for _, p := range s.procs {
		if p.cmd == s.workers[0] {
			ctx, cancel := context.WithTimeout(context.Background(), localstack.StopTimeout)
			defer cancel()
			require.NoError(t, p.p.Stop(ctx), "cropq worker stopped by SIGTERM:\n%s", p.out)
		}
	}
}

func TestE2EDuplicateWhileQueued(t *testing.T) {
	s := newStack(t, stackOptions{})
	// No worker yet: both enqueues meet a queued task.
	assert.Contains(t, s.enqueueURL("dup-1", firstImage(t), 300, 300), "queued")
	assert.Contains(t, s.enqueueURL("dup-1", firstImage(t), 300, 300), "already known")
	s.startWorker()
	rec := s.awaitState("dup-1", 60*time.Second, status.Succeeded, status.Failed)
	require.Equal(t, status.Succeeded, rec.State)
	st := s.stats()
	assert.Equal(t, int64(1), st.Usage)
	assert.Equal(t, int64(1), st.Calls["200"])
}

func TestE2ECopyFailureDoesNotPayTwice(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.startWorker()
	require.NoError(t, s.minio.Stop(context.Background()))

	s.enqueueURL("copyfail-1", firstImage(t), 640, 480)
	rec := s.awaitState("copyfail-1", 60*time.Second, status.Retrying)
	require.NotNil(t, rec.Checkpoint, "the paid result is checkpointed before the copy")
	assert.Equal(t, 1, rec.PaidCalls)

	// Let a few attempts find S3 away, then bring it back. After the first
	// failed upload the storage gate is open: later attempts wait for the
	// bucket and are handed back without spending a retry.
	require.Eventually(t, func() bool {
		n := 0
		for _, h := range s.record("copyfail-1").History {
			if h.State == status.Retrying {
				n++
			}
		}
		return n >= 2
	}, 60*time.Second, 100*time.Millisecond)
	require.NoError(t, s.minio.Start(context.Background()))

	rec = s.awaitState("copyfail-1", 60*time.Second, status.Succeeded, status.Failed)
	require.Equal(t, status.Succeeded, rec.State)
	assert.Equal(t, 1, rec.PaidCalls, "retries after a failed copy reuse the checkpoint")
	assert.Equal(t, int64(1), s.stats().Usage)
	assert.Equal(t, image.Config{Width: 640, Height: 480}, s.object(rec.Stored.Key))
}

func TestE2EPermanentErrorFailsWithoutRetry(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.startWorker()
	// The emulator answers resCode 1000 for URLs carrying its sensitive marker.
	out, err := s.cropq("enqueue", "--request-id", "perm-1", "--url", s.images+"/"+firstImage(t)+"?sensitive=1", "--width", "300", "--height", "300")
	require.NoError(t, err, out)

	rec := s.awaitState("perm-1", 60*time.Second, status.Failed, status.Succeeded)
	require.Equal(t, status.Failed, rec.State)
	assert.Equal(t, "1000", rec.ErrorCode)
	assert.Equal(t, 1, rec.Attempt)
	assert.Equal(t, 0, rec.PaidCalls)

	info, err := asynq.NewInspectorFromRedisClient(s.rdb).GetTaskInfo(tasks.DefaultQueue, "perm-1")
	require.NoError(t, err)
	assert.Equal(t, asynq.TaskStateArchived, info.State, "a permanent error is archived at once")
	assert.Equal(t, 0, info.Retried)
	assert.Equal(t, int64(0), s.stats().Usage)
}

func TestE2EExpiredResultIsCroppedAgain(t *testing.T) {
	s := newStack(t, stackOptions{resultTTL: 2 * time.Second})
	s.startWorker()
	require.NoError(t, s.minio.Stop(context.Background()))

	s.enqueueURL("expire-1", firstImage(t), 500, 500)
	rec := s.awaitState("expire-1", 60*time.Second, status.Retrying)
	require.NotNil(t, rec.Checkpoint)
	expires := rec.Checkpoint.ExpiresAt
	// Wait until the checkpointed URL is past its expiry, then restore S3.
	require.Eventually(t, func() bool { return time.Now().After(expires.Add(time.Second)) }, 30*time.Second, 100*time.Millisecond)
	require.NoError(t, s.minio.Start(context.Background()))

	rec = s.awaitState("expire-1", 60*time.Second, status.Succeeded, status.Failed)
	require.Equal(t, status.Succeeded, rec.State)
	assert.GreaterOrEqual(t, rec.PaidCalls, 2, "an expired result is paid for again")
	assert.Equal(t, int64(rec.PaidCalls), s.stats().Usage, "every paid call is on the record")
	assert.Equal(t, image.Config{Width: 500, Height: 500}, s.object(rec.Stored.Key))
}

// firstImage is the last sample image by name (what cropq-dev crops last).
func firstImage(t *testing.T) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("..", "..", "testdata", "images"))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		if _, ok := imageformat.ByFileName(e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	require.NotEmpty(t, names)
	sort.Strings(names)
	return names[len(names)-1]
}

// `make run` on a fresh machine: cropq-dev dev starts its own Redis and MinIO,
// the emulator and a worker, and crops every sample.
func TestDevOnceCropsTheSamples(t *testing.T) {
	testenv.Needs(t, "an end-to-end stack")
	bin := cropqDevBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "dev", "--once", "--width", "400", "--height", "300")
	cmd.Dir = filepath.Join("..", "..")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CROPQ_") && !strings.HasPrefix(kv, "AWS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	samples, err := os.ReadDir(filepath.Join("..", "..", "testdata", "images"))
	require.NoError(t, err)
	n := 0
	for _, e := range samples {
		if ext := filepath.Ext(e.Name()); ext == ".jpg" || ext == ".png" {
			n++
		}
	}
	assert.Equal(t, n, strings.Count(string(out), " succeeded "), "%s", out)
	assert.Contains(t, string(out), "local stand-in of the Image Cropping API", "the emulator says what it is")
	assert.Regexp(t, `web UI +http://127\.0\.0\.1:\d+/ui/ \(user any, password dev-[0-9a-f]+\)`, string(out), "make run prints the page's address")
	assert.Regexp(t, fmt.Sprintf(`web UI +batch samples-\d+: http://\S+/ui/batches/samples-\d+ \(%d crops\)`, n), string(out), "the samples' batch is on the page")
	assert.NotContains(t, string(out), "WARNING", "redis-server and MinIO are installed by make tools: %s", out)
}

// The shared quota is visible to operators, and a rate-limit answer lowers
// it for the whole fleet.
func TestE2EQuotaIsSharedAndReadable(t *testing.T) {
	s := newStack(t, stackOptions{emulatorRate: 1})
	s.env = append(s.env, "CROPQ_QUOTA_RATE=50", "CROPQ_QUOTA_BURST=50") // far above the emulator's 1/s: must adapt
	s.startWorker()
	s.startWorker()
	for i := range 4 {
		s.enqueueURL(fmt.Sprintf("e2e-q-%d", i), firstImage(t), 300, 300)
	}
	for i := range 4 {
		rec := s.awaitState(fmt.Sprintf("e2e-q-%d", i), 60*time.Second, status.Succeeded, status.Failed)
		require.Equal(t, status.Succeeded, rec.State, "error: %s %s", rec.ErrorCode, rec.ErrorMessage)
	}
	out, err := s.cropq("status", "--quota")
	require.NoError(t, err)
	var st quota.State
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	assert.InDelta(t, 50, st.Ceiling, 0)
	assert.True(t, st.Adaptive)
	assert.Positive(t, st.Decreases, "501s from a 1/s emulator lower the shared rate")
	assert.Less(t, st.Effective, 50.0)
	assert.NotContains(t, out, "e2e-key", "the account appears hashed")
	assert.Equal(t, int64(4), s.stats().Usage)
}

// Bulk loads from a file are resumable: a second run skips what is known;
// cropq wait follows the batch to the end.
func TestE2EBulkEnqueueAndWait(t *testing.T) {
	s := newStack(t, stackOptions{})
	dir := t.TempDir()
	img := s.images + "/" + firstImage(t)
	var jsonl strings.Builder
	for i := range 6 {
		fmt.Fprintf(&jsonl, `{"requestId":"bulk-%d","imageUrl":%q,"targetWidth":300,"targetHeight":300}`+"\n", i, img)
	}
	jsonl.WriteString(`{"requestId":"bulk-bad","imageUrl":"ftp://nope","targetWidth":300,"targetHeight":300}` + "\n")
	jsonl.WriteString("not json\n")
	jsonlPath := filepath.Join(dir, "items.jsonl")
	require.NoError(t, os.WriteFile(jsonlPath, []byte(jsonl.String()), 0o644))

	out, err := s.cropq("enqueue", "--file", jsonlPath, "--batch", "bulk-1", "--no-progress")
	require.Error(t, err, "bad rows make a non-zero exit")
	assert.Contains(t, out, "8 rows")
	assert.Contains(t, out, "6 enqueued")
	assert.Contains(t, out, "2 invalid")
	assert.Contains(t, err.Error(), "imageUrl", "the bad row's field is named")

	// Resume: the same file again enqueues nothing new.
	out, _ = s.cropq("enqueue", "--file", jsonlPath, "--batch", "bulk-1", "--no-progress")
	assert.Contains(t, out, "0 enqueued, 6 already known (skipped)")

	csvPath := filepath.Join(dir, "items.csv")
	require.NoError(t, os.WriteFile(csvPath, []byte("requestId,imageUrl,targetWidth,targetHeight\nbulk-csv-1,"+img+",400,300\n"), 0o644))
	out, err = s.cropq("enqueue", "--file", csvPath, "--batch", "bulk-1", "--no-progress")
	require.NoError(t, err)
	assert.Contains(t, out, "1 enqueued")

	s.startWorker()
	out, err = s.cropq("wait", "--batch", "bulk-1", "--interval", "100ms", "--timeout", "90s")
	require.NoError(t, err, out)
	assert.Contains(t, out, "7/7 done (succeeded 7)")
	out, err = s.cropq("wait", "bulk-csv-1")
	require.NoError(t, err)
	assert.Contains(t, out, "succeeded")
	_, err = s.cropq("wait", "no-such-id")
	assert.ErrorContains(t, err, "exit status 3")
}

// The HTTP API takes a crop whose large base64 image is claim-checked into
// S3; the worker crops it, removes the input, appends the event to the
// stream and calls the signed callback. A request canceled through the API
// is called back too.
func TestE2EAPIClaimCheckAndCallback(t *testing.T) {
	s := newStack(t, stackOptions{})
	const secret = "whsec-e2e"
	got := make(chan []byte, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secret), r.Header, body, time.Minute, time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		select {
		case got <- body:
		default:
		}
	}))
	t.Cleanup(receiver.Close)
	apiAddr := freeAddr(t)
	s.env = append(s.env, "CROPQ_WEBHOOK_SECRET="+secret, "CROPQ_WEBHOOK_ALLOW=127.0.0.0/8",
		"CROPQ_CLAIM_CHECK_BYTES=1024", "CROPQ_API_TOKENS=tok-e2e-0123456789", "CROPQ_API_ADDR="+apiAddr)
	s.start("api", "api")
	s.awaitHTTP("http://" + apiAddr + "/healthz")
	call := func(method, path string, body []byte) int {
		t.Helper()
		code, _, _ := apiDo(t, method, "http://"+apiAddr+path, "tok-e2e-0123456789", string(body))
		return code
	}
	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "images", firstImage(t)))
	require.NoError(t, err)
	b64 := base64.StdEncoding.EncodeToString(img)

	// Canceled before any worker runs.
	body, err := json.Marshal(map[string]any{"requestId": "api-0", "imageBase64": b64,
		"targetWidth": 500, "targetHeight": 500, "callbackUrl": receiver.URL + "/hook?token=x"})
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, call("POST", "/v1/crops", body))
	require.Equal(t, http.StatusOK, call("DELETE", "/v1/crops/api-0", nil))

	s.startWorker()
	body, err = json.Marshal(map[string]any{"requestId": "api-1", "imageBase64": b64,
		"targetWidth": 500, "targetHeight": 500, "batchId": "api-batch", "callbackUrl": receiver.URL + "/hook?token=x"})
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, call("POST", "/v1/crops", body))

	// The task in Redis carries a reference, not the image.
	info, err := asynq.NewInspectorFromRedisClient(s.rdb).GetTaskInfo(tasks.DefaultQueue, "api-1")
	if err == nil { // it may already be done and gone from pending
		assert.Less(t, len(info.Payload), 1024)
	}

	rec := s.awaitState("api-1", 60*time.Second, status.Succeeded, status.Failed)
	require.Equal(t, status.Succeeded, rec.State, "%s %s", rec.ErrorCode, rec.ErrorMessage)
	assert.Equal(t, image.Config{Width: 500, Height: 500}, s.object(rec.Stored.Key))

	events := map[string]webhook.Event{}
	timeout := time.After(60 * time.Second)
	for len(events) < 2 {
		select {
		case b := <-got:
			var ev webhook.Event
			require.NoError(t, json.Unmarshal(b, &ev))
			events[ev.RequestID] = ev
		case <-timeout:
			t.Fatalf("signed callbacks within 60s: got %v, want api-0 and api-1", events)
		}
	}
	ev := events["api-1"]
	assert.Equal(t, "succeeded", ev.State)
	assert.Equal(t, rec.Stored.Key, ev.Key)
	assert.Equal(t, "api-batch", ev.BatchID)
	assert.Equal(t, "canceled", events["api-0"].State)

	msgs, err := s.rdb.XRange(context.Background(), rediskey.Default.Events(), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	assert.Equal(t, "api-0", msgs[0].Values["requestId"])
	assert.Equal(t, "canceled", msgs[0].Values["state"])
	assert.Equal(t, "api-1", msgs[1].Values["requestId"])

	// The claim-checked inputs are removed: once the crop is stored, and
	// when the request is canceled.
	require.Eventually(t, func() bool {
		out, err := s.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String("inputs/")})
		return err == nil && len(out.Contents) == 0
	}, 10*time.Second, 100*time.Millisecond)
}

// The runnable producer example works against a running system.
func TestE2EProducerExampleRuns(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.startWorker()
	cmd := exec.Command("go", "run", "./examples/producer", "-redis", s.redis.URL(), "-width", "300", "-height", "300",
		"-url", s.images+"/"+firstImage(t), "-timeout", "60s", "-allow-private-urls")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "enqueued")
	assert.Contains(t, string(out), "succeeded")
	assert.Contains(t, string(out), "map[succeeded:1]")
}

// The runnable worker example embeds the public worker and crops against a
// running system with no cropq worker of its own: it submits one image,
// waits for its outcome, then drains and exits.
func TestE2EWorkerExampleRuns(t *testing.T) {
	s := newStack(t, stackOptions{})
	cmd := exec.Command("go", "run", "./examples/worker", "-redis", s.redis.URL(), "-api", s.emuURL,
		"-s3", s.minio.Endpoint(), "-bucket", s.bucket, "-local", "-url", s.images+"/"+firstImage(t))
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), s.env...) // its app key and secret, S3's credentials
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	var key string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[1] == string(status.Succeeded) {
			key = strings.TrimPrefix(f[2], s.bucket+"/")
		}
	}
	require.NotEmpty(t, key, "a line saying where the crop was stored:\n%s", out)
	assert.Equal(t, image.Config{Width: 300, Height: 300}, s.object(key))
	assert.Equal(t, int64(1), s.stats().Usage)
	assert.Contains(t, string(out), "worker: draining")
}
