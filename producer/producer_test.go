package producer_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

func newProducer(t *testing.T, cfg producer.Config) (*producer.Producer, *redis.Client) {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	p := producer.New(rdb, cfg)
	t.Cleanup(func() { _ = p.Close() })
	return p, rdb
}

func req(id string) tasks.Request {
	return tasks.Request{RequestID: id, ImageURL: "https://cdn.example.com/" + id + ".jpg", Params: tasks.Params{TargetWidth: 800, TargetHeight: 800}}
}

func taskPayload(t *testing.T, rdb *redis.Client, id string) tasks.CropPayload {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(tasks.DefaultQueue, id)
	require.NoError(t, err)
	p, err := tasks.ParseCropPayload(info.Payload)
	require.NoError(t, err)
	return p
}

func TestEnqueueIsIdempotentByRequestID(t *testing.T) {
	p, rdb := newProducer(t, producer.Config{})
	ctx := context.Background()

	res := p.Enqueue(ctx, req("sku-1"))
	require.NoError(t, res.Err)
	assert.Equal(t, producer.Enqueued, res.Outcome)
	assert.Equal(t, status.Queued, res.Record.State)
	assert.Equal(t, "https://cdn.example.com/sku-1.jpg", taskPayload(t, rdb, "sku-1").ImageURL)

	again := p.Enqueue(ctx, req("sku-1"))
	assert.Equal(t, producer.Known, again.Outcome)
	assert.NoError(t, again.Err)

	other := req("sku-1")
	other.TargetWidth = 400
	conflict := p.Enqueue(ctx, other)
	assert.Equal(t, producer.Conflict, conflict.Outcome)
	var ce *producer.ConflictError
	require.ErrorAs(t, conflict.Err, &ce)
	assert.Equal(t, "targetWidth", ce.Field)
	assert.Equal(t, 800, conflict.Record.TargetWidth, "the existing record is answered")

	bad := req("sku-2")
	bad.TargetHeight = 50
	invalid := p.Enqueue(ctx, bad)
	assert.Equal(t, producer.Invalid, invalid.Outcome)
	var ve *cropapi.ValidationError
	require.ErrorAs(t, invalid.Err, &ve)
	assert.Equal(t, "targetHeight", ve.Field)
	_, err := p.Get(ctx, "sku-2")
	assert.ErrorIs(t, err, status.ErrNotFound, "nothing half-done")
}

func TestEnqueueBatch(t *testing.T) {
	p, rdb := newProducer(t, producer.Config{Concurrency: 4})
	ctx := context.Background()
	var reqs []tasks.Request
	for i := range 300 {
		r := req(fmt.Sprintf("b-%03d", i))
		r.BatchID = "batch-7"
		reqs = append(reqs, r)
	}
	reqs = append(reqs, reqs[0]) // a duplicate inside the batch
	bad := req("b-bad")
	bad.ImageURL = "ftp://x"
	reqs = append(reqs, bad)

	res := p.EnqueueBatch(ctx, reqs)
	require.Len(t, res, len(reqs))
	counts := map[producer.Outcome]int{}
	for _, r := range res {
		counts[r.Outcome]++
	}
	assert.Equal(t, map[producer.Outcome]int{producer.Enqueued: 300, producer.Known: 1, producer.Invalid: 1}, counts)
	assert.Equal(t, "b-bad", res[len(res)-1].RequestID)

	bc, err := p.BatchCounts(ctx, "", "batch-7")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Queued: 300}, bc)
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(tasks.DefaultQueue)
	require.NoError(t, err)
	assert.Equal(t, 300, info.Pending)
}

// A record left queued without its task (a crash between the two writes)
// gets its task back when the same request comes again.
func TestLostTaskIsRepaired(t *testing.T) {
	p, rdb := newProducer(t, producer.Config{})
	ctx := context.Background()
	r := req("lost")
	_, _, err := records.NewStore(rdb, status.Config{}).Create(ctx, status.Record{RequestID: "lost", Params: tasks.Params{TargetWidth: 800,
		TargetHeight: 800}, Source: "url", SourceURL: r.ImageURL})
	require.NoError(t, err)

	res := p.Enqueue(ctx, r)
	require.NoError(t, res.Err)
	assert.Equal(t, producer.Known, res.Outcome)
	assert.Equal(t, "lost", taskPayload(t, rdb, "lost").RequestID)
}

func TestLargeImagesAreClaimChecked(t *testing.T) {
	m := testenv.MinIO(t)
	s3c, bucket := testenv.MinIOBucket(t, m)
	inputs, err := storage.NewInputs(s3c, storage.InputsConfig{Bucket: bucket})
	require.NoError(t, err)
	p, rdb := newProducer(t, producer.Config{Inputs: inputs, ClaimCheckBytes: 4 << 10})
	ctx := context.Background()

	img, err := os.ReadFile(filepath.Join("..", "testdata", "images", "mug-square.png")) // 7 KB: above 4 KiB
	require.NoError(t, err)
	big := tasks.Request{RequestID: "big", ImageBase64: base64.StdEncoding.EncodeToString(img), Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}}
	res := p.Enqueue(ctx, big)
	require.NoError(t, res.Err)
	pl := taskPayload(t, rdb, "big")
	assert.Empty(t, pl.ImageBase64, "the image is not in Redis")
	require.NotNil(t, pl.Input)
	got, err := inputs.Get(ctx, storage.Input{Bucket: pl.Input.Bucket, Key: pl.Input.Key, Size: pl.Input.Size, SHA256: pl.Input.SHA256})
	require.NoError(t, err)
	assert.Equal(t, img, got)
	assert.Equal(t, "base64", res.Record.Source)

	// The same image again is known; another image under the id conflicts.
	assert.Equal(t, producer.Known, p.Enqueue(ctx, big).Outcome)
	other := big
	other.ImageBase64 = base64.StdEncoding.EncodeToString(append(img[:len(img):len(img)], 0))
	c := p.Enqueue(ctx, other)
	assert.Equal(t, producer.Conflict, c.Outcome, "%v", c.Err)

	// Canceling it removes the stored image too: nothing else refers to it.
	rec, err := p.Cancel(ctx, "big")
	require.NoError(t, err)
	assert.Equal(t, status.Canceled, rec.State)
	_, err = inputs.Get(ctx, storage.Input{Bucket: pl.Input.Bucket, Key: pl.Input.Key, Size: pl.Input.Size, SHA256: pl.Input.SHA256})
	var ie *storage.InputError
	require.ErrorAs(t, err, &ie, "the input is gone after the cancel")
	objs, err := s3c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	require.NoError(t, err)
	assert.Empty(t, objs.Contents, "nothing left in the inputs bucket")

	small := tasks.Request{RequestID: "small", ImageBase64: big.ImageBase64, Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}}
	p2 := producer.New(rdb, producer.Config{Inputs: inputs}) // default threshold 256 KiB
	t.Cleanup(func() { _ = p2.Close() })
	require.NoError(t, p2.Enqueue(ctx, small).Err)
	assert.NotEmpty(t, taskPayload(t, rdb, "small").ImageBase64, "small images stay in the payload")
}

func TestCancel(t *testing.T) {
	p, rdb := newProducer(t, producer.Config{})
	ctx := context.Background()
	require.NoError(t, p.Enqueue(ctx, req("c-1")).Err)
	rec, err := p.Cancel(ctx, "c-1")
	require.NoError(t, err)
	assert.Equal(t, status.Canceled, rec.State)
	_, err = asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(tasks.DefaultQueue, "c-1")
	assert.True(t, errors.Is(err, asynq.ErrTaskNotFound), "task deleted: %v", err)

	_, err = p.Cancel(ctx, "c-1")
	var te *status.TransitionError
	require.ErrorAs(t, err, &te)
	_, err = p.Cancel(ctx, "nope")
	assert.ErrorIs(t, err, status.ErrNotFound)
}

// failingInputs refuses every claim check, as S3 down would.
type failingInputs struct{}

func (failingInputs) Put(context.Context, string, []byte) (storage.Input, error) {
	return storage.Input{}, errors.New("s3 is down")
}
func (failingInputs) Delete(context.Context, storage.Input) error { return nil }

// A step that fails after the record was made undoes all it did: the
// record and its batch count, so that the batch finishes when the same
// load is run again (with the backlog, record and entry are one step).
func TestFailedEnqueueUndoesTheBatchCount(t *testing.T) {
	img, err := os.ReadFile(filepath.Join("..", "testdata", "images", "mug-square.png"))
	require.NoError(t, err)
	big := tasks.Request{RequestID: "big-1", ImageBase64: base64.StdEncoding.EncodeToString(img), Params: tasks.Params{TargetWidth: 300, TargetHeight: 300, BatchID: "b-undo"}}
	p, rdb := newProducer(t, producer.Config{Inputs: failingInputs{}, ClaimCheckBytes: 1024})
	res := p.EnqueueBatch(context.Background(), []tasks.Request{big, {RequestID: "small-1", ImageURL: "https://cdn.example.com/a.jpg",
		Params: tasks.Params{TargetWidth: 300, TargetHeight: 300, BatchID: "b-undo"}}})
	assert.Equal(t, producer.Error, res[0].Outcome)
	assert.Equal(t, producer.Enqueued, res[1].Outcome)
	counts, err := p.BatchCounts(context.Background(), "", "b-undo")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Queued: 1}, counts, "the failed request is not counted")
	n, err := rdb.Exists(context.Background(), rediskey.Default.Status("big-1")).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "nor recorded")
}

// A bulk load against a Redis at its memory limit (maxmemory, noeviction):
// what Redis refuses is reported as an error and leaves nothing behind, the
// batch counts equal the records that exist, and the same load run again
// once the limit is raised completes the batch with exact counts.
func TestLoadAgainstARedisRefusingWrites(t *testing.T) {
	img, err := os.ReadFile(filepath.Join("..", "testdata", "images", "mug-square.png"))
	require.NoError(t, err)
	for _, path := range []string{"asynq", "backlog"} {
		t.Run(path, func(t *testing.T) {
			ctx := context.Background()
			srv := testenv.Redis(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { _ = rdb.Close() })
			cfg := producer.Config{}
			if path == "backlog" {
				cfg.Backlog = true
			}
			p := producer.New(rdb, cfg)
			t.Cleanup(func() { _ = p.Close() })

			var load []tasks.Request
			for i := range 400 {
				load = append(load, tasks.Request{RequestID: fmt.Sprintf("oom-%03d", i), ImageBase64: base64.StdEncoding.EncodeToString(img),
					Params: tasks.Params{TargetWidth: 300, TargetHeight: 300, BatchID: "b-oom"}})
			}
			info, err := rdb.Info(ctx, "memory").Result()
			require.NoError(t, err)
			var used int64
			for _, line := range strings.Split(info, "\r\n") {
				if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
					used, err = strconv.ParseInt(v, 10, 64)
					require.NoError(t, err)
				}
			}
			require.Positive(t, used)
			// Room for about half the load's images.
			require.NoError(t, rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
			require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used+int64(len(img))*4/3*200, 10)).Err())

			enqueued, refused := 0, 0
			for _, r := range p.EnqueueBatch(ctx, load) {
				n, err := rdb.Exists(ctx, rediskey.Default.Status(r.RequestID)).Result()
				require.NoError(t, err)
				switch r.Outcome {
				case producer.Enqueued:
					enqueued++
					assert.EqualValues(t, 1, n, "%s: enqueued, so recorded", r.RequestID)
				case producer.Error:
					refused++
					assert.Zero(t, n, "%s: refused (%v), so not recorded", r.RequestID, r.Err)
				default:
					t.Errorf("%s: %s", r.RequestID, r.Outcome)
				}
			}
			require.Positive(t, refused, "the limit was reached")
			if path == "asynq" {
				// One request at a time: those before the limit got in. (The
				// backlog admits a chunk in one script: all of it or none.)
				require.Positive(t, enqueued, "the limit left room for some")
			}
			counts, err := p.BatchCounts(ctx, "", "b-oom")
			require.NoError(t, err)
			assert.Equal(t, int64(enqueued), counts[status.Queued], "counts equal the records")
			assert.Len(t, counts, min(enqueued, 1), "and nothing else: %v", counts)

			require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())
			again := 0
			for _, r := range p.EnqueueBatch(ctx, load) {
				switch r.Outcome {
				case producer.Enqueued:
					again++
				case producer.Known:
				default:
					t.Errorf("%s: %s (%v)", r.RequestID, r.Outcome, r.Err)
				}
			}
			assert.Equal(t, refused, again, "the run again enqueues exactly what was refused")
			counts, err = p.BatchCounts(ctx, "", "b-oom")
			require.NoError(t, err)
			assert.Equal(t, map[status.State]int64{status.Queued: 400}, counts)
			info2, err := p.Batch(ctx, "", "b-oom")
			require.NoError(t, err)
			assert.EqualValues(t, 400, info2.Total)
		})
	}
}

// Close succeeds: the Redis client is the caller's and nothing else is
// held, so a worker that closes its manifest reader's producer after a
// clean drain reports no error.
func TestCloseSucceeds(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rdb.Close() })
	assert.NoError(t, producer.New(rdb, producer.Config{}).Close())
}
