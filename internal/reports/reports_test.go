package reports_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/namespace"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/reports"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

func TestParseDestination(t *testing.T) {
	for _, c := range []struct {
		dest, bucket, prefix, err string
	}{
		{"s3://reports/catalogue/", "reports", "catalogue/", ""},
		{"s3://reports/", "reports", "", ""},
		{"s3://reports", "reports", "", ""},
		{"s3://reports/a/b/", "reports", "a/b/", ""},
		{"https://reports/x/", "", "", "must be s3://BUCKET/PREFIX/"},
		{"s3:///x/", "", "", "names no bucket"},
		{"s3://reports/x", "", "", "must end with /"},
		{"s3://reports//x/", "", "", "empty path segment"},
		{"s3://reports/" + strings.Repeat("p", 513) + "/", "", "", "at most 512 bytes"},
	} {
		b, p, err := reports.ParseDestination(c.dest)
		if c.err != "" {
			var de *reports.DestinationError
			require.ErrorAs(t, err, &de, c.dest)
			assert.Equal(t, "report", de.Field)
			assert.ErrorContains(t, err, c.err, c.dest)
			continue
		}
		require.NoError(t, err, c.dest)
		assert.Equal(t, [2]string{c.bucket, c.prefix}, [2]string{b, p}, c.dest)
	}
}

type fixture struct {
	st     *records.Store
	rdb    *redis.Client
	s3     *s3.Client
	bucket string
	w      *reports.Writer
	walls  namespace.Walls
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t).Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	m := testenv.MinIO(t)
	client, bucket := testenv.MinIOBucket(t, m)
	f := &fixture{st: records.NewStore(rdb, status.Config{TTL: time.Hour}), rdb: rdb, s3: client, bucket: bucket,
		walls: namespace.Walls{DefaultBucket: bucket, TenantBuckets: map[string][]string{"globex": {"globex-own"}}}}
	f.w = reports.New(f.st, reports.NewUploader(client, 0), reports.Config{Walls: f.walls})
	return f
}

// object reads an object's lines by request id, and their number.
func (f *fixture) object(t *testing.T, key string) (map[string]records.ReportLine, int) {
	t.Helper()
	out, err := f.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
	require.NoError(t, err, key)
	defer out.Body.Close()
	assert.Equal(t, "application/x-ndjson", aws.ToString(out.ContentType))
	lines := map[string]records.ReportLine{}
	n := 0
	sc := bufio.NewScanner(out.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l records.ReportLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
		lines[l.RequestID] = l
		n++
	}
	require.NoError(t, sc.Err())
	return lines, n
}

func (f *fixture) batch(t *testing.T, tenant, id string, n int) []string {
	t.Helper()
	var recs []status.Record
	var ids []string
	for i := range n {
		rid := fmt.Sprintf("%s-%s-%d", tenant, id, i)
		ids = append(ids, rid)
		recs = append(recs, status.Record{RequestID: rid, Params: tasks.Params{BatchID: id, Tenant: tenant}})
	}
	_, err := f.st.CreateMany(context.Background(), recs)
	require.NoError(t, err)
	return ids
}

// A done batch's report lands in S3 once, as PREFIX + batchId + .jsonl (a
// tenant's under its own prefix in the default bucket); not before the
// batch is done; a destination the tenant may not use is said on the
// batch and not retried.
func TestReportsAreWrittenOnceDone(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ids := f.batch(t, "acme", "cat", 3)
	require.NoError(t, f.st.ExpectReport(ctx, "acme", "cat", "s3://"+f.bucket+"/reports/"))
	_, err := f.st.Cancel(ctx, ids[0])
	require.NoError(t, err)
	_, err = f.st.Transition(ctx, ids[1], records.Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)

	n, err := f.w.WriteDue(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "not done: nothing written")

	_, err = f.st.Transition(ctx, ids[1], records.Update{To: status.Failed, Attempt: 1, ErrorCode: "image_fetch", ErrorMessage: "404"})
	require.NoError(t, err)
	_, err = f.st.Cancel(ctx, ids[2])
	require.NoError(t, err)
	n, err = f.w.WriteDue(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	const key = "tenants/acme/reports/cat.jsonl"
	lines, count := f.object(t, key)
	assert.Equal(t, 3, count)
	assert.Equal(t, "image_fetch", lines[ids[1]].Code)
	assert.Equal(t, "canceled", lines[ids[2]].State)
	b, err := f.st.BatchState(ctx, "acme", "cat")
	require.NoError(t, err)
	assert.Equal(t, "s3://"+f.bucket+"/"+key, b.ReportWritten)
	ttl, err := f.rdb.PTTL(ctx, f.st.ReportKey("acme", "cat")).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, 50*time.Minute, "written: the batch's keys get their TTL")

	// Exactly once: the next rounds find nothing due.
	require.NoError(t, f.s3DeleteObject(key))
	n, err = f.w.WriteDue(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	_, err = f.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
	assert.Error(t, err, "not written again")

	// globex may not write to acme's place, nor to a bucket not its own.
	gids := f.batch(t, "globex", "g", 1)
	require.NoError(t, f.st.ExpectReport(ctx, "globex", "g", "s3://someone-elses/r/"))
	_, err = f.st.Cancel(ctx, gids[0])
	require.NoError(t, err)
	n, err = f.w.WriteDue(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	b, err = f.st.BatchState(ctx, "globex", "g")
	require.NoError(t, err)
	assert.Contains(t, b.ReportError, "tenant globex may not write to bucket someone-elses")
	// A bucket that does not exist is said on the batch, not retried.
	dids := f.batch(t, "default", "nob", 1)
	require.NoError(t, f.st.ExpectReport(ctx, "default", "nob", "s3://no-such-bucket-for-reports/r/"))
	_, err = f.st.Cancel(ctx, dids[0])
	require.NoError(t, err)
	n, err = f.w.WriteDue(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	b, err = f.st.BatchState(ctx, "default", "nob")
	require.NoError(t, err)
	assert.Equal(t, "bucket no-such-bucket-for-reports does not exist", b.ReportError)

	due, err := f.st.ReportsDue(ctx, 10)
	require.NoError(t, err)
	assert.Empty(t, due, "not retried")
}

func (f *fixture) s3DeleteObject(key string) error {
	_, err := f.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
	return err
}

// A report larger than a part goes up in parts, streamed; a crash (here:
// the mark lost) before the batch is marked writes it again whole over
// the same key; an upload that fails (S3 away) leaves the batch due.
func TestALargeReportIsStreamedAndWrittenAgainAfterACrash(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ids := f.batch(t, "default", "big", 2)
	for _, id := range ids {
		_, err := f.st.Cancel(ctx, id)
		require.NoError(t, err)
	}
	// Refused manifest lines, as the manifest reader appends them: enough
	// for three 5 MiB parts.
	pad := strings.Repeat("x", 300)
	const refused = 60_000
	for i := 0; i < refused; i += 1000 {
		pipe := f.rdb.Pipeline()
		for j := i; j < i+1000; j++ {
			b, _ := json.Marshal(records.ReportLine{Line: int64(j + 1), State: "failed", Code: "bad_line", Message: "targetWidth: must be a number " + pad})
			pipe.RPush(ctx, f.st.ReportKey("default", "big"), b)
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
	}
	require.NoError(t, f.st.ExpectReport(ctx, "default", "big", "s3://"+f.bucket+"/"))

	// S3 away: the batch stays due.
	down := reports.New(f.st, reports.NewUploader(s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://127.0.0.1:1"),
		UsePathStyle: true, Credentials: aws.AnonymousCredentials{}, RetryMaxAttempts: 1}), 0), reports.Config{Walls: f.walls})
	_, err := down.WriteDue(ctx)
	require.Error(t, err)
	due, err := f.st.ReportsDue(ctx, 10)
	require.NoError(t, err)
	require.Len(t, due, 1, "still due")

	n, err := f.w.WriteDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	head, err := f.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String("big.jsonl")})
	require.NoError(t, err)
	assert.Greater(t, aws.ToInt64(head.ContentLength), int64(15<<20), "three parts and more")
	assert.Contains(t, aws.ToString(head.ETag), "-", "a multipart upload")
	_, count := f.object(t, "big.jsonl")
	assert.Equal(t, refused+2, count)

	// The mark lost, as a crash between the upload and the mark would:
	// written again, whole, over the same key.
	require.NoError(t, f.rdb.HDel(ctx, rediskey.Default.Batch("", "big"), records.ReportWrittenField).Err())
	require.NoError(t, f.rdb.SAdd(ctx, f.st.ReportsDueKey(), "default/big").Err())
	require.NoError(t, f.s3DeleteObject("big.jsonl"))
	n, err = f.w.WriteDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, count = f.object(t, "big.jsonl")
	assert.Equal(t, refused+2, count)
}
