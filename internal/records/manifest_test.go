package records_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
)

func TestManifestDescriptor(t *testing.T) {
	s, rdb := newStore(t, status.Config{TTL: time.Hour})
	ctx := context.Background()
	m := records.Manifest{Tenant: "acme", BatchID: "june", Bucket: "cat", Key: "june.jsonl", ETag: `"e1"`, Size: 100, Format: "jsonl"}
	got, created, err := s.RegisterManifest(ctx, m, "s3://cat/reports/")
	require.NoError(t, err)
	assert.True(t, created)
	assert.Equal(t, records.ManifestReading, got.State)
	_, created, err = s.RegisterManifest(ctx, m, "")
	require.NoError(t, err)
	assert.False(t, created, "the same manifest again")
	other := m
	other.ETag = `"e2"`
	_, _, err = s.RegisterManifest(ctx, other, "")
	assert.ErrorIs(t, err, records.ErrBatchExists, "another version under the same batch id")
	listed, err := s.ReadingManifests(ctx)
	require.NoError(t, err)
	assert.Equal(t, [][2]string{{"acme", "june"}}, listed)
	refs, err := s.Batches(ctx, "acme", 10)
	require.NoError(t, err)
	require.Len(t, refs, 1, "in the batch registry")

	// Refused lines count once each, in order.
	for _, tc := range []struct {
		line int64
		want bool
	}{{5, true}, {5, false}, {3, false}, {9, true}} {
		ok, err := s.RefuseLine(ctx, "acme", "june", records.ReportLine{Line: tc.line, Code: "bad_line", Message: "x"})
		require.NoError(t, err)
		assert.Equal(t, tc.want, ok, "line %d", tc.line)
	}
	counts, err := s.BatchCounts(ctx, "acme", "june")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Failed: 2}, counts, "no descriptor, cursor or report field among the counts")
	n, err := rdb.LLen(ctx, s.ReportKey("acme", "june")).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 2, n)

	// While reading, the batch never expires; once stopped, it gets its
	// TTL (nothing of it waits), and stays stopped.
	key := rediskey.Default.Batch("acme", "june")
	ttl, err := rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl)
	got.State, got.Code = records.ManifestStopped, "manifest_changed"
	require.NoError(t, s.SaveManifest(ctx, got))
	got.State, got.Code, got.Offset = records.ManifestReading, "", 50
	require.NoError(t, s.SaveManifest(ctx, got), "a late save of a reader that did not know")
	have, ok, err := s.Manifest(ctx, "acme", "june")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, records.ManifestStopped, have.State)
	assert.Equal(t, "manifest_changed", have.Code)
	reading, err := rdb.HExists(ctx, key, records.ReadingField).Result()
	require.NoError(t, err)
	assert.False(t, reading)
	ttl, err = rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "done, but its report is due in S3: kept until written")
	due, err := s.ReportsDue(ctx, 10)
	require.NoError(t, err)
	assert.Equal(t, []records.BatchRef{{Tenant: "acme", BatchID: "june"}}, due, "listed for the writer at registration")
	require.NoError(t, s.ReportWritten(ctx, "acme", "june", "s3://cat/reports/june.jsonl"))
	ttl, err = rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, 59*time.Minute, "written: the batch gets its TTL")
	listed, err = s.ReadingManifests(ctx)
	require.NoError(t, err)
	assert.Empty(t, listed)
}
