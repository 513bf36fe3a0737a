package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/lock"
	"github.com/cropq/cropq/internal/testenv"
)

func TestLockIsOneHoldersUntilReleasedOrExpired(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	l := lock.New(rdb, "test:lock")

	holder, err := l.Acquire(ctx, "a", time.Minute)
	require.NoError(t, err)
	assert.Equal(t, "a", holder, "free: taken")
	holder, err = l.Acquire(ctx, "b", time.Minute)
	require.NoError(t, err)
	assert.Equal(t, "a", holder, "held: the holder is named")

	// Acquire by the holder renews it, as Renew does.
	require.NoError(t, rdb.PExpire(ctx, "test:lock", time.Second).Err())
	holder, err = l.Acquire(ctx, "a", time.Minute)
	require.NoError(t, err)
	assert.Equal(t, "a", holder)
	assert.Greater(t, rdb.PTTL(ctx, "test:lock").Val(), 30*time.Second, "renewed by its holder")
	ok, err := l.Renew(ctx, "b", time.Hour)
	require.NoError(t, err)
	assert.False(t, ok, "only the holder renews")
	ok, err = l.Renew(ctx, "a", time.Hour)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Greater(t, rdb.PTTL(ctx, "test:lock").Val(), 30*time.Minute)

	require.NoError(t, l.Release(ctx, "b"))
	assert.Equal(t, "a", rdb.Get(ctx, "test:lock").Val(), "only the holder releases")
	require.NoError(t, l.Release(ctx, "a"))
	assert.Zero(t, rdb.Exists(ctx, "test:lock").Val(), "released")
	ok, err = l.Renew(ctx, "a", time.Hour)
	require.NoError(t, err)
	assert.False(t, ok, "a free lock is not taken by a renewal")
	assert.Zero(t, rdb.Exists(ctx, "test:lock").Val())

	// A holder that stops renewing loses it when its TTL runs out.
	_, err = l.Acquire(ctx, "a", 100*time.Millisecond)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		holder, err := l.Acquire(ctx, "b", time.Minute)
		return err == nil && holder == "b"
	}, 5*time.Second, 20*time.Millisecond)
}
