package quota_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/testenv"
)

func newClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Two processes (two clients, two limiters) on one account share one quota:
// GCRA cannot hand out 11 tokens at 10/s with burst 1 in under a second.
func TestTokensAreSharedAcrossProcesses(t *testing.T) {
	srv := testenv.Redis(t)
	cfg := quota.Config{Account: "app-1", Rate: 10, Burst: 1, MaxWait: 5 * time.Second}
	a, b := quota.New(newClient(t, srv.Addr()), cfg), quota.New(newClient(t, srv.Addr()), cfg)

	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 11)
	for i := range 11 {
		l := a
		if i%2 == 1 {
			l = b
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- l.Wait(ctx) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond, "11 tokens at 10/s, burst 1, take ≥ 1 s")

	// Another account has its own quota.
	other := quota.New(newClient(t, srv.Addr()), quota.Config{Account: "app-2", Rate: 10, Burst: 1, MaxWait: time.Millisecond})
	require.NoError(t, other.Wait(ctx))
}

func TestWaitDefersPastTheBound(t *testing.T) {
	srv := testenv.Redis(t)
	l := quota.New(newClient(t, srv.Addr()), quota.Config{Account: "app", Rate: 1, Burst: 1, MaxWait: 100 * time.Millisecond})
	ctx := context.Background()
	require.NoError(t, l.Wait(ctx))
	err := l.Wait(ctx)
	var de *quota.DeferError
	require.ErrorAs(t, err, &de)
	assert.Greater(t, de.RetryAfter, 100*time.Millisecond)
	assert.LessOrEqual(t, de.RetryAfter, time.Second)
	assert.Equal(t, de.RetryAfter, de.RateLimitedFor())

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, l.Wait(cctx), context.Canceled)
}

func TestAIMD(t *testing.T) {
	srv := testenv.Redis(t)
	cfg := quota.Config{Account: "app", Rate: 10, Adaptive: true, Decrease: 0.5, Increase: 2, Cooldown: time.Hour}
	a, b := quota.New(newClient(t, srv.Addr()), cfg), quota.New(newClient(t, srv.Addr()), cfg)
	ctx := context.Background()

	st, err := a.State(ctx)
	require.NoError(t, err)
	assert.InDelta(t, 10, st.Effective, 0, "starts at the ceiling")

	a.Observe(ctx, true)
	b.Observe(ctx, true) // the same overshoot seen by another pod: within the cooldown, counted once
	for _, l := range []*quota.Limiter{a, b} {
		st, err := l.State(ctx)
		require.NoError(t, err)
		assert.InDelta(t, 5, st.Effective, 1e-9, "every pod sees the decrease")
		assert.Equal(t, int64(1), st.Decreases)
	}

	// Successes add Increase/rate each: 5 at rate ~5 add about Increase.
	for range 5 {
		b.Observe(ctx, false)
	}
	st, err = a.State(ctx)
	require.NoError(t, err)
	assert.Greater(t, st.Effective, 6.5)
	assert.Less(t, st.Effective, 7.5)

	for range 200 {
		a.Observe(ctx, false)
	}
	st, err = a.State(ctx)
	require.NoError(t, err)
	assert.InDelta(t, 10, st.Effective, 0, "never above the ceiling")

	// The keys carry a hash of the account, never the app key.
	keys, err := newClient(t, srv.Addr()).Keys(ctx, "*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	for _, k := range keys {
		assert.False(t, strings.Contains(k, "app"), "key %q", k)
	}
}

func TestFloorAndNonAdaptive(t *testing.T) {
	srv := testenv.Redis(t)
	ctx := context.Background()
	l := quota.New(newClient(t, srv.Addr()), quota.Config{Account: "x", Rate: 8, MinRate: 2, Adaptive: true, Decrease: 0.1, Cooldown: time.Nanosecond})
	for range 5 {
		l.Observe(ctx, true) // a sub-millisecond cooldown never holds a decrease back
	}
	st, err := l.State(ctx)
	require.NoError(t, err)
	assert.InDelta(t, 2, st.Effective, 1e-9, "floored at MinRate")

	fixed := quota.New(newClient(t, srv.Addr()), quota.Config{Account: "y", Rate: 8})
	fixed.Observe(ctx, true)
	st, err = fixed.State(ctx)
	require.NoError(t, err)
	assert.InDelta(t, 8, st.Effective, 0)
	assert.False(t, st.Adaptive)
	assert.Zero(t, st.Decreases)
	require.NoError(t, fixed.Reset(ctx))
}

func TestRedisDownIsAnError(t *testing.T) {
	srv := testenv.Redis(t)
	c := newClient(t, srv.Addr())
	l := quota.New(c, quota.Config{Account: "x", Rate: 8})
	require.NoError(t, c.Close())
	err := l.Wait(context.Background())
	require.Error(t, err)
	var de *quota.DeferError
	assert.False(t, errors.As(err, &de), "an outage is not a rate limit")
}
