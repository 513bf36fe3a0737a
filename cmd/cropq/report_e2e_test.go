package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
)

// reportBatch writes a JSONL file of n URL crops of batch, the ids in
// bad failing (their image does not exist: the vendor answers 900), and
// enqueues it.
func (s *stack) reportBatch(t *testing.T, batch string, n int, bad map[int]bool) []string {
	t.Helper()
	var b strings.Builder
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%02d", batch, i)
		ids = append(ids, id)
		img := s.images + "/mug-square.png"
		if bad[i] {
			img = s.images + "/no-such-image-" + id + ".png"
		}
		fmt.Fprintf(&b, `{"requestId":%q,"imageUrl":%q,"targetWidth":300,"targetHeight":300}`+"\n", id, img)
	}
	path := filepath.Join(t.TempDir(), batch+".jsonl")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	out, err := s.cropq("enqueue", "--file", path, "--batch", batch, "--no-progress")
	require.NoError(t, err, out)
	return ids
}

// readReport decodes NDJSON report lines, by request id, and counts them.
func readReport(t *testing.T, r *bufio.Scanner) (map[string]records.ReportLine, int) {
	t.Helper()
	lines := map[string]records.ReportLine{}
	n := 0
	for r.Scan() {
		var l records.ReportLine
		require.NoError(t, json.Unmarshal(r.Bytes(), &l), r.Text())
		lines[l.RequestID] = l
		n++
	}
	require.NoError(t, r.Err())
	return lines, n
}

// checkReport checks a report of ids against what happened: the bad ones
// failed with the vendor's code, the others succeeded with an object that
// exists, each once.
func (s *stack) checkReport(t *testing.T, lines map[string]records.ReportLine, n int, ids []string, bad map[int]bool) {
	t.Helper()
	assert.Equal(t, len(ids), n, "one line per request")
	for i, id := range ids {
		l, ok := lines[id]
		if !assert.True(t, ok, "%s is in the report", id) {
			continue
		}
		assert.False(t, l.FinishedAt.IsZero(), id)
		if bad[i] {
			assert.Equal(t, "failed", l.State, id)
			assert.Equal(t, "900", l.Code, "%s: the vendor's code for an image it cannot fetch", id)
			assert.Zero(t, l.PaidCalls, id)
			continue
		}
		assert.Equal(t, "succeeded", l.State, "%s: %s %s", id, l.Code, l.Message)
		assert.Equal(t, 1, l.PaidCalls, id)
		assert.Equal(t, s.bucket, l.Bucket, id)
		assert.NotEmpty(t, l.ETag, id)
		head, err := s.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(l.Bucket), Key: aws.String(l.Key)})
		if assert.NoError(t, err, "%s names an object that exists", id) {
			assert.Equal(t, l.Size, aws.ToInt64(head.ContentLength), id)
		}
	}
}

// `cropq wait --batch B --report FILE` follows a batch of inline requests,
// some failing, to its end, then writes its report: one line per request,
// with its state, code and object.
func TestWaitWritesTheBatchReport(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.env = append(s.env, "CROPQ_MAX_RETRY=1")
	bad := map[int]bool{2: true, 7: true, 11: true}
	ids := s.reportBatch(t, "rep", 12, bad)
	s.startWorker()
	file := filepath.Join(t.TempDir(), "rep-report.jsonl")
	out, err := s.cropq("wait", "--batch", "rep", "--report", file, "--interval", "100ms", "--timeout", "120s", "--no-progress")
	require.ErrorContains(t, err, "exit status 4", "three failed: %s", out)
	assert.Contains(t, out, "batch rep: 12/12 done (failed 3, succeeded 9)")
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	lines, n := readReport(t, bufio.NewScanner(f))
	s.checkReport(t, lines, n, ids, bad)

	// A batch whose manifest is still read is not done for wait, whatever
	// its counts; it is once reading ends.
	require.NoError(t, s.rdb.HSet(context.Background(), rediskey.Default.Batch("", "rep"), records.ReadingField, "1").Err())
	_, err = s.cropq("wait", "--batch", "rep", "--interval", "100ms", "--timeout", "1s", "--no-progress")
	require.ErrorContains(t, err, "exit status 5", "not done while reading")
	require.NoError(t, s.rdb.HDel(context.Background(), rediskey.Default.Batch("", "rep"), records.ReadingField).Err())
	_, err = s.cropq("wait", "--batch", "rep", "--interval", "100ms", "--timeout", "5s", "--no-progress")
	require.ErrorContains(t, err, "exit status 4", "done again")

	// --report is a batch's.
	_, err = s.cropq("wait", "rep-00", "--report", file)
	assert.ErrorContains(t, err, "--report: a report is a batch's")
}

// A batch registered with a report destination has its report written to
// MinIO once done, by the workers, and it is still there, whole, after
// the batch's records and keys expired (CROPQ_STATUS_TTL 2 s).
func TestAReportInS3OutlivesTheStatusTTL(t *testing.T) {
	const ttl = 2 * time.Second
	s := newStack(t, stackOptions{})
	s.env = append(s.env, "CROPQ_MAX_RETRY=1", "CROPQ_STATUS_TTL="+ttl.String())
	ctx := context.Background()
	st := records.NewStore(s.rdb, status.Config{TTL: ttl})
	bad := map[int]bool{1: true, 4: true}
	ids := s.reportBatch(t, "cat", 8, bad)
	// What registering the batch with "report": "s3://BUCKET/reports/" does.
	require.NoError(t, st.ExpectReport(ctx, "", "cat", "s3://"+s.bucket+"/reports/"))
	s.startWorker()

	const key = "reports/cat.jsonl"
	require.Eventually(t, func() bool {
		_, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
		return err == nil
	}, 90*time.Second, 200*time.Millisecond, "the report lands in S3 once the batch is done")
	b, err := st.BatchState(ctx, "", "cat")
	require.NoError(t, err)
	assert.Equal(t, "s3://"+s.bucket+"/"+key, b.ReportWritten)

	// Past the TTL, the records and the batch are gone from Redis.
	require.Eventually(t, func() bool {
		n, err := s.rdb.Exists(ctx, st.ReportKey("", "cat"), rediskey.Default.Batch("", "cat")).Result()
		if err != nil || n != 0 {
			return false
		}
		for _, id := range ids {
			if _, err := st.Get(ctx, id); !errors.Is(err, status.ErrNotFound) {
				return false
			}
		}
		return true
	}, 30*time.Second, 200*time.Millisecond, "records and batch expire")
	out, err := s.cropq("wait", "--batch", "cat", "--timeout", "5s")
	require.ErrorContains(t, err, "exit status 3", "the batch is gone from Redis: %s", out)

	obj, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	require.NoError(t, err)
	defer obj.Body.Close()
	lines, n := readReport(t, bufio.NewScanner(obj.Body))
	s.checkReport(t, lines, n, ids, bad)
}
