package quota_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/testenv"
)

// Calls taken by two processes and the rate-limited answers they observe
// are counted once, fleet-wide, and read back by a third.
func TestUsageIsCountedFleetWide(t *testing.T) {
	srv := testenv.Redis(t)
	cfg := quota.Config{Account: "app-u", Rate: 1000, Burst: 10, Adaptive: true}
	a, b := quota.New(newClient(t, srv.Addr()), cfg), quota.New(newClient(t, srv.Addr()), cfg)
	reader := quota.New(newClient(t, srv.Addr()), cfg)
	ctx := context.Background()

	u, err := reader.Usage(ctx)
	require.NoError(t, err)
	assert.Equal(t, quota.Usage{}, u)
	assert.Zero(t, u.LimitedShare())

	for i := range 5 {
		l := a
		if i%2 == 1 {
			l = b
		}
		require.NoError(t, l.Wait(ctx))
	}
	a.Observe(ctx, true)
	b.Observe(ctx, false)

	u, err = reader.Usage(ctx)
	require.NoError(t, err)
	assert.Equal(t, quota.Usage{CallsLastHour: 5, CallsToday: 5, LimitedLastHour: 1, LimitedToday: 1}, u)
	assert.InDelta(t, 0.2, u.LimitedShare(), 1e-9)

	other := quota.New(newClient(t, srv.Addr()), quota.Config{Account: "app-other", Rate: 1000, Burst: 10})
	u, err = other.Usage(ctx)
	require.NoError(t, err)
	assert.Equal(t, quota.Usage{}, u, "another account counts apart")
}
