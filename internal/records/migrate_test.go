package records_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Records an earlier version left with a TTL while their request waits
// lose it after the upgrade; finished ones keep theirs; it runs once.
func TestPersistWaitingRemovesTheTTLOfWaitingRecordsOnce(t *testing.T) {
	ctx := context.Background()
	st, rdb := newStore(t, status.Config{Prefix: "m:", TTL: time.Hour})
	for _, id := range []string{"queued", "running", "done"} {
		_, _, err := st.Create(ctx, status.Record{RequestID: id, Params: tasks.Params{TargetWidth: 10, TargetHeight: 10}, Source: "url"})
		require.NoError(t, err)
	}
	_, err := st.Transition(ctx, "running", records.Update{To: status.Running, Attempt: 1})
	require.NoError(t, err)
	_, err = st.Transition(ctx, "done", records.Update{To: status.Canceled})
	require.NoError(t, err)
	// As an earlier version wrote them: a TTL from creation.
	for _, id := range []string{"queued", "running"} {
		require.NoError(t, rdb.Expire(ctx, st.Key(id), time.Hour).Err())
	}
	require.NoError(t, rdb.Set(ctx, "m:status:{garbled}", "not json", time.Hour).Err())

	n, done, err := st.PersistWaiting(ctx)
	require.NoError(t, err)
	assert.True(t, done)
	assert.Equal(t, int64(2), n)
	for id, want := range map[string]bool{"queued": false, "running": false, "done": true} {
		ttl, err := rdb.PTTL(ctx, st.Key(id)).Result()
		require.NoError(t, err)
		assert.Equal(t, want, ttl > 0, "%s has a TTL: %v", id, ttl)
	}
	ttl, err := rdb.PTTL(ctx, "m:status:{garbled}").Result()
	require.NoError(t, err)
	assert.Positive(t, ttl, "what cannot be read is left as it was")

	require.NoError(t, rdb.Expire(ctx, st.Key("queued"), time.Hour).Err())
	n, done, err = st.PersistWaiting(ctx)
	require.NoError(t, err)
	assert.False(t, done, "once per deployment")
	assert.Zero(t, n)
}
