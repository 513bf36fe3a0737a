package manifest_test

import (
	"bytes"
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
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/localsvc"
	"github.com/cropq/cropq/internal/manifest"
	"github.com/cropq/cropq/internal/namespace"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
)

type fixture struct {
	minio  *localsvc.MinIO
	rdb    redis.UniversalClient
	s3c    *s3.Client
	bucket string
	prod   *producer.Producer
	store  *records.Store
	bl     *backlog.Backlog
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := testenv.Redis(t)
	return newFixtureOn(t, redis.NewClient(&redis.Options{Addr: srv.Addr()}))
}

func newFixtureOn(t *testing.T, rdb redis.UniversalClient) *fixture {
	t.Helper()
	t.Cleanup(func() { _ = rdb.Close() })
	minio := testenv.MinIO(t)
	s3c, bucket := testenv.MinIOBucket(t, minio)
	prod := producer.New(rdb, producer.Config{Backlog: true, Manifests: manifest.S3{Client: s3c}})
	t.Cleanup(func() { _ = prod.Close() })
	return &fixture{minio: minio, rdb: rdb, s3c: s3c, bucket: bucket, prod: prod, store: records.NewStore(rdb, status.Config{}), bl: backlog.New(rdb, backlog.Config{})}
}

func (f *fixture) put(t *testing.T, key, body string) {
	t.Helper()
	_, err := f.s3c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key), Body: strings.NewReader(body)})
	require.NoError(t, err)
}

func (f *fixture) reader(cfg manifest.Config) *manifest.Reader {
	return manifest.NewReader(f.store, manifest.S3{Client: f.s3c}, f.prod, cfg)
}

func (f *fixture) report(t *testing.T, tenant, batch string) []records.ReportLine {
	t.Helper()
	raws, err := f.rdb.LRange(context.Background(), f.store.ReportKey(tenant, batch), 0, -1).Result()
	require.NoError(t, err)
	var out []records.ReportLine
	for _, r := range raws {
		var l records.ReportLine
		require.NoError(t, json.Unmarshal([]byte(r), &l))
		out = append(out, l)
	}
	return out
}

func good(id string) string {
	return fmt.Sprintf(`{"requestId":%q,"imageUrl":"https://cdn.example.com/%s.jpg","targetWidth":400,"targetHeight":300}`, id, id)
}

// A manifest with bad lines of every kind is read to its end: each good
// line a request naming its line, each bad one refused alone with its line
// number and field, in small chunks (lines longer than a chunk included).
func TestReaderReadsToTheEnd(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	lines := []string{
		good("m-1"),
		`{"requestId":"m-2","imageUrl":"https://cdn.example.com/2.jpg","targetWidth":40,"targetHeight":300}`, // width below the limit
		``,                    // blank: skipped, still counted as a line
		`{"requestId":"m-3",`, // not JSON
		`{"imageUrl":"https://cdn.example.com/4.jpg","targetWidth":400,"targetHeight":300}`,                                   // no requestId
		`{"requestId":"m-5","imageUrl":"https://cdn.example.com/5.jpg","targetWidth":400,"targetHeight":300,"tenant":"acme"}`, // another tenant
		good("m-6") + strings.Repeat(" ", 300), // longer than a chunk
		good("m-7"),                            // no final newline
	}
	f.put(t, "cat/june.jsonl", strings.Join(lines, "\n"))
	bi, err := f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/cat/june.jsonl"})
	require.NoError(t, err)
	require.NotNil(t, bi.Manifest)
	assert.Equal(t, "reading", bi.Manifest.State)
	assert.False(t, bi.Done)

	r := f.reader(manifest.Config{ChunkBytes: 64, Group: 2})
	require.NoError(t, r.Refill(ctx))
	bi, err = f.prod.Batch(ctx, "", "june")
	require.NoError(t, err)
	require.Equal(t, "done", bi.Manifest.State)
	assert.EqualValues(t, 7, bi.Manifest.Total)
	assert.EqualValues(t, 7, bi.Total)
	assert.Equal(t, map[status.State]int64{status.Queued: 3, status.Failed: 4}, bi.Counts)
	on, err := f.rdb.HExists(ctx, rediskey.Default.Batch("", "june"), records.ReadingField).Result()
	require.NoError(t, err)
	assert.False(t, on, "the reading field goes at the end")

	for id, line := range map[string]int64{"m-1": 1, "m-6": 7, "m-7": 8} {
		rec, err := f.prod.Get(ctx, id)
		require.NoError(t, err, id)
		assert.Equal(t, line, rec.Line, id)
		assert.Equal(t, "june", rec.BatchID)
	}
	n, err := f.bl.Size(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 3, n, "the good lines wait in the backlog")

	rep := f.report(t, "", "june")
	require.Len(t, rep, 4)
	want := []struct {
		line  int64
		field string
	}{{2, "targetWidth"}, {4, ""}, {5, "requestId"}, {6, "tenant"}}
	for i, w := range want {
		assert.Equal(t, w.line, rep[i].Line)
		assert.Equal(t, "failed", rep[i].State)
		assert.Equal(t, manifest.CodeBadLine, rep[i].Code)
		assert.Contains(t, rep[i].Message, fmt.Sprintf("line %d: ", w.line))
		assert.Contains(t, rep[i].Message, w.field)
	}
	assert.Equal(t, "m-2", rep[0].RequestID)
}

// Reading again from an older cursor (a reader killed after it created a
// chunk's requests, before it moved the cursor) creates nothing twice and
// refuses no line twice.
func TestReaderRereadCreatesNothingTwice(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var b strings.Builder
	for i := 1; i <= 50; i++ {
		if i%10 == 0 {
			fmt.Fprintf(&b, "{\"requestId\":\"r-%d\"}\n", i) // no size
			continue
		}
		b.WriteString(good(fmt.Sprintf("r-%d", i)) + "\n")
	}
	f.put(t, "again.jsonl", b.String())
	_, err := f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{BatchID: "again", Manifest: "s3://" + f.bucket + "/again.jsonl"})
	require.NoError(t, err)
	r := f.reader(manifest.Config{Group: 7})
	got, err := r.Read(ctx, "default", "again", 30)
	require.NoError(t, err)
	assert.Equal(t, 30, got)
	start, ok, err := f.store.Manifest(ctx, "default", "again")
	require.NoError(t, err)
	require.True(t, ok)
	assert.EqualValues(t, 30, start.Line)

	// The cursor back at the start, as a crash before any save would leave it.
	start.Offset, start.Line, start.Read = 0, 0, 0
	require.NoError(t, f.store.SaveManifest(ctx, start))
	_, err = r.Read(ctx, "default", "again", 1000)
	require.NoError(t, err)
	counts, err := f.store.BatchCounts(ctx, "default", "again")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Queued: 45, status.Failed: 5}, counts)
	assert.Len(t, f.report(t, "", "again"), 5)
	n, err := f.bl.Size(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 45, n, "one backlog entry per request")
	m, _, err := f.store.Manifest(ctx, "default", "again")
	require.NoError(t, err)
	assert.Equal(t, records.ManifestDone, m.State)
	assert.EqualValues(t, 50, m.Total)
}

// The reader keeps about Target of a batch's requests queued, not more.
func TestReaderKeepsTargetQueued(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var b strings.Builder
	for i := 1; i <= 100; i++ {
		b.WriteString(good(fmt.Sprintf("t-%d", i)) + "\n")
	}
	f.put(t, "big.jsonl", b.String())
	_, err := f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/big.jsonl"})
	require.NoError(t, err)
	r := f.reader(manifest.Config{Target: 20, Group: 5})
	require.NoError(t, r.Refill(ctx))
	require.NoError(t, r.Refill(ctx)) // full: nothing more
	counts, err := f.store.BatchCounts(ctx, "", "big")
	require.NoError(t, err)
	assert.EqualValues(t, 20, counts[status.Queued])
	m, _, err := f.store.Manifest(ctx, "", "big")
	require.NoError(t, err)
	assert.Equal(t, records.ManifestReading, m.State)
	assert.EqualValues(t, 20, m.Read)
}

// A CSV manifest: its header is read once, and kept for the next chunks.
func TestReaderCSV(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	csv := "requestId,imageUrl,targetWidth,targetHeight,priority\n" +
		"c-1,https://cdn.example.com/1.jpg,400,300,\n" +
		"c-2,https://cdn.example.com/2.jpg,400,x,\n" +
		"c-3,https://cdn.example.com/3.jpg,400,300,urgent\n"
	f.put(t, "cat.csv", csv)
	_, err := f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/cat.csv", Priority: "backfill"})
	require.NoError(t, err)
	r := f.reader(manifest.Config{Group: 1})
	require.NoError(t, r.Refill(ctx))
	c1, err := f.prod.Get(ctx, "c-1")
	require.NoError(t, err)
	assert.Equal(t, "backfill", c1.Priority, "the manifest's lane for lines without one")
	assert.EqualValues(t, 2, c1.Line)
	c3, err := f.prod.Get(ctx, "c-3")
	require.NoError(t, err)
	assert.Equal(t, "urgent", c3.Priority)
	rep := f.report(t, "", "cat")
	require.Len(t, rep, 1)
	assert.EqualValues(t, 3, rep[0].Line)
	assert.Contains(t, rep[0].Message, "targetHeight")
}

// A manifest replaced after registration stops its batch with a code,
// rather than mix two versions; one removed likewise.
func TestReaderStopsOnChangeOrRemoval(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, code string
		after      func(key string)
	}{
		{"changed", manifest.CodeChanged, func(key string) { f.put(t, key, good("other")+"\n") }},
		{"gone", manifest.CodeGone, func(key string) {
			_, err := f.s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.name + ".jsonl"
			var b bytes.Buffer
			for i := 1; i <= 10; i++ {
				b.WriteString(good(fmt.Sprintf("%s-%d", tc.name, i)) + "\n")
			}
			f.put(t, key, b.String())
			_, err := f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/" + key})
			require.NoError(t, err)
			r := f.reader(manifest.Config{ChunkBytes: 200, Group: 1})
			_, err = r.Read(ctx, "", tc.name, 2)
			require.NoError(t, err)
			tc.after(key)
			require.NoError(t, r.Refill(ctx))
			bi, err := f.prod.Batch(ctx, "", tc.name)
			require.NoError(t, err)
			assert.Equal(t, "stopped", bi.Manifest.State)
			assert.Equal(t, tc.code, bi.Manifest.Code)
			assert.NotEmpty(t, bi.Manifest.Message)
			assert.EqualValues(t, 2, bi.Counts[status.Queued], "what was read stays")
			left, err := f.store.ReadingManifests(ctx)
			require.NoError(t, err)
			assert.NotContains(t, left, [2]string{"default", tc.name})
		})
	}
}

// Registration: the same manifest again is the same batch; another one
// under that id, or a batch of requests of that id, is a conflict; bad
// input names its field.
func TestRegisterManifest(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.put(t, "reg.jsonl", good("g-1")+"\n")
	url := "s3://" + f.bucket + "/reg.jsonl"
	_, err := f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{Manifest: url, Report: "s3://" + f.bucket + "/reports/"})
	require.NoError(t, err)
	_, err = f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{Manifest: url})
	require.NoError(t, err, "the same registration again")
	report, err := f.rdb.HGet(ctx, rediskey.Default.Batch("", "reg"), records.ReportField).Result()
	require.NoError(t, err)
	assert.Equal(t, "s3://"+f.bucket+"/reports/", report)

	f.put(t, "other.jsonl", good("g-2")+"\n")
	_, err = f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{BatchID: "reg", Manifest: "s3://" + f.bucket + "/other.jsonl"})
	var exists *producer.BatchExistsError
	require.ErrorAs(t, err, &exists)

	res := f.prod.Enqueue(ctx, mustRequest(t, `{"requestId":"inline-1","imageUrl":"https://cdn.example.com/1.jpg","targetWidth":400,"targetHeight":300,"batchId":"inline"}`))
	require.NoError(t, res.Err)
	_, err = f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{BatchID: "inline", Manifest: url})
	require.ErrorAs(t, err, &exists)

	for _, tc := range []struct {
		req   producer.ManifestRequest
		field string
	}{
		{producer.ManifestRequest{Manifest: "https://x/y.jsonl"}, "manifest"},
		{producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/y.txt"}, "manifest"},
		{producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/missing.jsonl"}, "manifest"},
		{producer.ManifestRequest{Manifest: url, Report: "s3://" + f.bucket + "/reports"}, "report"},
		{producer.ManifestRequest{Manifest: url, Report: "file:///tmp/"}, "report"},
		{producer.ManifestRequest{Manifest: url, BatchID: "-bad"}, "batchId"},
		{producer.ManifestRequest{Manifest: url, Priority: "asap"}, "priority"},
	} {
		_, err := f.prod.RegisterManifest(ctx, "", tc.req)
		assertField(t, err, tc.field)
	}
}

// S3 unreachable mid-read: the reader reports it and keeps its cursor;
// once S3 is back it reads on from there, nothing lost or read twice.
func TestReaderRidesOutAnS3Outage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var b strings.Builder
	for i := 1; i <= 40; i++ {
		b.WriteString(good(fmt.Sprintf("o-%d", i)) + "\n")
	}
	f.put(t, "outage.jsonl", b.String())
	_, err := f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/outage.jsonl"})
	require.NoError(t, err)
	r := f.reader(manifest.Config{ChunkBytes: 256, Group: 5, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	_, err = r.Read(ctx, "", "outage", 10)
	require.NoError(t, err)
	before, _, err := f.store.Manifest(ctx, "", "outage")
	require.NoError(t, err)

	require.NoError(t, f.minio.Stop(ctx))
	err = r.Refill(ctx)
	require.Error(t, err, "S3 is down")
	during, _, err2 := f.store.Manifest(ctx, "", "outage")
	require.NoError(t, err2)
	assert.Equal(t, records.ManifestReading, during.State, "a transient failure does not stop the batch")
	assert.Equal(t, before.Offset, during.Offset, "the cursor stays")
	assert.Equal(t, before.Line, during.Line)

	require.NoError(t, f.minio.Start(ctx))
	require.Eventually(t, func() bool {
		_ = r.Refill(ctx)
		m, _, err := f.store.Manifest(ctx, "", "outage")
		return err == nil && m.State == records.ManifestDone
	}, 30*time.Second, 20*time.Millisecond)
	counts, err := f.store.BatchCounts(ctx, "", "outage")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Queued: 40}, counts)
	n, err := f.bl.Size(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 40, n)
}

// A tenant names manifests and report destinations only in its own
// buckets or under tenants/TENANT/ of the default bucket.
func TestRegisterManifestWalls(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	walls := namespace.Walls{DefaultBucket: f.bucket, TenantBuckets: map[string][]string{"acme": {"acme-media"}}}
	prod := producer.New(f.rdb, producer.Config{Backlog: true, Manifests: manifest.S3{Client: f.s3c}, ReadWalls: walls})
	t.Cleanup(func() { _ = prod.Close() })
	f.put(t, "tenants/acme/june.jsonl", good("w-1")+"\n")
	f.put(t, "tenants/globex/june.jsonl", good("w-2")+"\n")
	own := "s3://" + f.bucket + "/tenants/acme/june.jsonl"
	_, err := prod.RegisterManifest(ctx, "acme", producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/tenants/globex/june.jsonl"})
	assertField(t, err, "manifest")
	_, err = prod.RegisterManifest(ctx, "acme", producer.ManifestRequest{Manifest: own, Report: "s3://" + f.bucket + "/reports/"})
	assertField(t, err, "report")
	bi, err := prod.RegisterManifest(ctx, "acme", producer.ManifestRequest{Manifest: own, Report: "s3://acme-media/reports/"})
	require.NoError(t, err)
	assert.Equal(t, "reading", bi.Manifest.State)
	_, err = f.prod.Batch(ctx, "", "june")
	assert.ErrorIs(t, err, status.ErrNotFound, "acme's batch is not the default tenant's")

	r := f.reader(manifest.Config{})
	require.NoError(t, r.Refill(ctx))
	rec, err := f.prod.Get(ctx, "w-1")
	require.NoError(t, err)
	assert.Equal(t, "acme", rec.Tenant, "the manifest's tenant")
}

// On a Redis Cluster, whose keys of a batch and of the deployment sit in
// different slots, a manifest is registered, read and refused line by line
// as on one primary.
func TestReaderOnACluster(t *testing.T) {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t).Addrs()})
	f := newFixtureOn(t, rdb)
	ctx := context.Background()
	f.put(t, "cl.jsonl", good("cl-1")+"\n{\"requestId\":\n"+good("cl-2")+"\n")
	_, err := f.prod.RegisterManifest(ctx, "", producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/cl.jsonl"})
	require.NoError(t, err)
	require.NoError(t, f.reader(manifest.Config{}).Refill(ctx))
	bi, err := f.prod.Batch(ctx, "", "cl")
	require.NoError(t, err)
	assert.Equal(t, "done", bi.Manifest.State)
	assert.Equal(t, map[status.State]int64{status.Queued: 2, status.Failed: 1}, bi.Counts)
	rep := f.report(t, "", "cl")
	require.Len(t, rep, 1)
	assert.EqualValues(t, 2, rep[0].Line)
	left, err := f.store.ReadingManifests(ctx)
	require.NoError(t, err)
	assert.Empty(t, left)
}

// With tracing on, a manifest keeps its registration's trace context once,
// on the batch, and each group of lines read is a "read manifest" span in a
// trace of its own (a manifest is read over days), linked to the
// registration, with the group's publish spans under it. The requests read
// carry that context; lines not read yet cost nothing.
func TestReaderTracesGroupsLinkedToTheRegistration(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	prod := producer.New(f.rdb, producer.Config{Backlog: true, Manifests: manifest.S3{Client: f.s3c}, TracerProvider: tp})
	var lines []string
	for i := range 5 {
		lines = append(lines, good(fmt.Sprintf("tr-%d", i)))
	}
	f.put(t, "cat/traced.jsonl", strings.Join(lines, "\n"))

	rctx, reg := tp.Tracer("test").Start(ctx, "POST /v1/batches")
	_, err := prod.RegisterManifest(rctx, "", producer.ManifestRequest{Manifest: "s3://" + f.bucket + "/cat/traced.jsonl"})
	reg.End()
	require.NoError(t, err)
	m, ok, err := f.store.Manifest(ctx, "", "traced")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, tracing.Format(reg.SpanContext()), m.Traceparent, "the registration's context, kept on the batch")

	r := manifest.NewReader(f.store, manifest.S3{Client: f.s3c}, prod, manifest.Config{Group: 2, TracerProvider: tp})
	n, err := r.Read(ctx, "", "traced", 3)
	require.NoError(t, err)
	require.Equal(t, 3, n)

	var reads []sdktrace.ReadOnlySpan
	readIDs := map[string]bool{}
	for _, s := range spans.Ended() {
		if s.Name() == manifest.SpanRead {
			reads = append(reads, s)
			readIDs[s.SpanContext().SpanID().String()] = true
		}
	}
	require.Len(t, reads, 2, "a span per group of two lines")
	for i, s := range reads {
		assert.False(t, s.Parent().IsValid(), "a trace of its own")
		assert.NotEqual(t, reg.SpanContext().TraceID(), s.SpanContext().TraceID())
		require.Len(t, s.Links(), 1)
		assert.Equal(t, reg.SpanContext().SpanID(), s.Links()[0].SpanContext.SpanID(), "linked to the registration")
		attrs := map[string]string{}
		for _, a := range s.Attributes() {
			attrs[string(a.Key)] = a.Value.String()
		}
		assert.Equal(t, fmt.Sprint(1+2*i), attrs["cropq.manifest.first_line"])
		assert.Equal(t, fmt.Sprint(2-i), attrs["messaging.batch.message_count"])
		assert.Equal(t, "traced", attrs["cropq.batch_id"])
	}
	publishes := 0
	for _, s := range spans.Ended() {
		if strings.HasPrefix(s.Name(), "publish ") {
			publishes++
			assert.True(t, readIDs[s.Parent().SpanID().String()], "a group's publish is under its read span")
		}
	}
	assert.Positive(t, publishes)
	for i := range 3 {
		rec, err := prod.Get(ctx, fmt.Sprintf("tr-%d", i))
		require.NoError(t, err)
		sc, err := tracing.Parse(rec.Traceparent)
		require.NoError(t, err, "a request read carries its group's context")
		assert.Contains(t, []trace.TraceID{reads[0].SpanContext().TraceID(), reads[1].SpanContext().TraceID()}, sc.TraceID())
	}
	_, err = prod.Get(ctx, "tr-3")
	assert.ErrorIs(t, err, status.ErrNotFound, "a line not read yet has no record")
}
