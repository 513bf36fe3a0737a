package budget_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/testenv"
)

func newRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestParseCap(t *testing.T) {
	for in, want := range map[string]budget.Cap{
		"50000/day":     {Limit: 50000, Period: budget.Day},
		"2000000/month": {Limit: 2000000, Period: budget.Month},
		"100/hour":      {Limit: 100, Period: budget.Hour},
		"0/day":         {Limit: 0, Period: budget.Day},
	} {
		got, err := budget.ParseCap(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "100", "100/week", "-1/day", "x/day", "1.5/hour"} {
		_, err := budget.ParseCap(in)
		assert.Error(t, err, in)
	}
}

// Two fleets' worth of callers racing at the cap never exceed it, and a
// refund gives a call back.
func TestReservationsNeverExceedTheCap(t *testing.T) {
	ctx := context.Background()
	rdb := newRedis(t)
	caps := map[string]budget.Cap{"acme": {Limit: 30, Period: budget.Day}}
	for run := range 20 {
		require.NoError(t, rdb.FlushAll(ctx).Err())
		a, b := budget.New(rdb, budget.Config{Caps: caps}), budget.New(rdb, budget.Config{Caps: caps})
		var got, refused atomic.Int64
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bs := a
				if i%2 == 1 {
					bs = b
				}
				_, err := bs.Reserve(ctx, "acme")
				var ex *budget.ExhaustedError
				switch {
				case err == nil:
					got.Add(1)
				case errors.As(err, &ex):
					refused.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		require.Equal(t, int64(30), got.Load(), "run %d", run)
		require.Equal(t, int64(20), refused.Load(), "run %d", run)
	}
	b := budget.New(rdb, budget.Config{Caps: caps})
	us, err := b.Usages(ctx)
	require.NoError(t, err)
	require.Len(t, us, 1)
	assert.Equal(t, int64(30), us[0].Used)
	assert.True(t, us[0].Exhausted())

	// A call not billed is given back: one more may be made.
	_, err = b.Reserve(ctx, "acme")
	var ex *budget.ExhaustedError
	require.ErrorAs(t, err, &ex)
	r, err := budget.New(rdb, budget.Config{Caps: map[string]budget.Cap{"acme": {Limit: 31, Period: budget.Day}}}).Reserve(ctx, "acme")
	require.NoError(t, err, "a raised cap counts on from the period's count")
	require.NoError(t, r.Refund(ctx))
	left, err := b.Left(ctx, []string{"acme", "globex"})
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"acme": 0}, left, "globex has no cap")

	// A tenant without a budget is never refused.
	for range 100 {
		_, err := b.Reserve(ctx, "globex")
		require.NoError(t, err)
	}
}

// Each period has its own count, in UTC.
func TestPeriodsRollOver(t *testing.T) {
	ctx := context.Background()
	rdb := newRedis(t)
	now := time.Date(2026, 12, 31, 23, 59, 0, 0, time.UTC)
	b := budget.New(rdb, budget.Config{Caps: map[string]budget.Cap{
		"h": {Limit: 1, Period: budget.Hour}, "d": {Limit: 1, Period: budget.Day}, "m": {Limit: 1, Period: budget.Month},
	}, Now: func() time.Time { return now }})
	for _, tenant := range []string{"h", "d", "m"} {
		_, err := b.Reserve(ctx, tenant)
		require.NoError(t, err)
		_, err = b.Reserve(ctx, tenant)
		var ex *budget.ExhaustedError
		require.ErrorAs(t, err, &ex, tenant)
		assert.Equal(t, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), ex.Until, tenant)
		assert.Equal(t, time.Minute, ex.WaitFor(), tenant)
	}
	left, err := b.Left(ctx, []string{"h", "d", "m", "free"})
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"h": 0, "d": 0, "m": 0}, left, "spent; free has no cap")
	now = now.Add(time.Minute)
	for _, tenant := range []string{"h", "d", "m"} {
		_, err := b.Reserve(ctx, tenant)
		require.NoError(t, err, "%s: a new period", tenant)
	}
}

// Until says when the last of n more calls fits.
func TestUntil(t *testing.T) {
	ctx := context.Background()
	rdb := newRedis(t)
	now := time.Date(2026, 12, 6, 10, 30, 0, 0, time.UTC)
	b := budget.New(rdb, budget.Config{Caps: map[string]budget.Cap{"acme": {Limit: 10, Period: budget.Hour}, "zero": {Limit: 0, Period: budget.Day}},
		Now: func() time.Time { return now }})
	for range 4 {
		_, err := b.Reserve(ctx, "acme")
		require.NoError(t, err)
	}
	for _, c := range []struct {
		calls int64
		at    time.Time
	}{
		{6, time.Time{}},
		{7, time.Date(2026, 12, 6, 11, 0, 0, 0, time.UTC)},
		{16, time.Date(2026, 12, 6, 11, 0, 0, 0, time.UTC)},
		{17, time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)},
	} {
		at, exhausted, ok, err := b.Until(ctx, "acme", c.calls)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.False(t, exhausted)
		assert.Equal(t, c.at, at, "%d calls", c.calls)
	}
	_, exhausted, ok, err := b.Until(ctx, "zero", 1)
	require.NoError(t, err)
	assert.True(t, exhausted)
	assert.False(t, ok, "a budget of 0 never has room")
	at, _, ok, err := b.Until(ctx, "nocap", 1000)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Zero(t, at)
}
