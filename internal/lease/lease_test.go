package lease

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/testenv"
)

func newRedis(t *testing.T) *redis.Client {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// requeuer records what it was handed; it fails while fail is set.
type requeuer struct {
	mu     sync.Mutex
	got    []Holder
	failed int
	fail   bool
}

func (r *requeuer) Requeue(_ context.Context, h Holder) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		r.failed++
		return errors.New("asynq away")
	}
	r.got = append(r.got, h)
	return nil
}

// rescueUntil calls Rescue until it hands something back (a lease's
// deadline is on Redis's clock, so the test waits for that clock).
func rescueUntil(t *testing.T, l *Leases, rq Requeuer) []Holder {
	t.Helper()
	var got []Holder
	require.Eventually(t, func() bool {
		hs, err := l.Rescue(context.Background(), rq, 10)
		got = append(got, hs...)
		return err == nil && len(got) > 0
	}, 10*time.Second, 10*time.Millisecond)
	return got
}

func TestAnUnrenewedLeaseIsRescuedAndItsHolderStops(t *testing.T) {
	rdb := newRedis(t)
	ctx := context.Background()
	// Renew an hour: the holder is "frozen", it never renews by itself.
	l := New(rdb, Config{Prefix: "t:", TTL: 200 * time.Millisecond, Renew: time.Hour, Owner: "pod-a"})
	h := Holder{Queue: "crops", TaskID: "req-1", Attempt: 3, Owner: "pod-a"}
	actx, ls, err := l.Acquire(ctx, h)
	require.NoError(t, err)
	held, err := ls.Held(ctx)
	require.NoError(t, err)
	assert.True(t, held)

	rq := &requeuer{}
	hs, err := l.Rescue(ctx, rq, 10)
	require.NoError(t, err)
	assert.Empty(t, hs, "a live lease is not rescued")

	got := rescueUntil(t, l, rq)
	assert.Equal(t, []Holder{h}, got)
	assert.Equal(t, []Holder{h}, rq.got)

	// The frozen holder wakes up: it must not pay, and its renewal ends it.
	held, err = ls.Held(ctx)
	require.NoError(t, err)
	assert.False(t, held, "a rescued lease is no longer held")
	lost, err := l.RenewAll(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, lost)
	<-actx.Done()
	assert.ErrorIs(t, context.Cause(actx), ErrLost)
	require.NoError(t, ls.Release(ctx))

	hs, err = l.Rescue(ctx, rq, 10)
	require.NoError(t, err)
	assert.Empty(t, hs, "a lease is rescued once")
}

func TestRenewedLeasesOutliveTheirTTL(t *testing.T) {
	rdb := newRedis(t)
	ctx := context.Background()
	l := New(rdb, Config{Prefix: "t:", TTL: 300 * time.Millisecond, Renew: 30 * time.Millisecond, Owner: "pod-b"})
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.Run(rctx) }()
	t.Cleanup(func() { stop(); wg.Wait() })

	actx, ls, err := l.Acquire(ctx, Holder{Queue: "crops", TaskID: "req-1", Attempt: 1})
	require.NoError(t, err)
	first, err := rdb.ZScore(ctx, l.Key(), "crops\nreq-1\n1\npod-b").Result()
	require.NoError(t, err)
	// Wait, on Redis's clock, until the first deadline has passed.
	require.Eventually(t, func() bool {
		now, err := rdb.Time(ctx).Result()
		return err == nil && float64(now.UnixMilli()) > first+100
	}, 5*time.Second, 10*time.Millisecond)

	rq := &requeuer{}
	hs, err := l.Rescue(ctx, rq, 10)
	require.NoError(t, err)
	assert.Empty(t, hs, "a renewed lease is not rescued")
	held, err := ls.Held(ctx)
	require.NoError(t, err)
	assert.True(t, held)
	assert.NoError(t, actx.Err())

	require.NoError(t, ls.Release(ctx))
	n, err := l.Count(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "a released lease is gone")
	assert.ErrorIs(t, actx.Err(), context.Canceled)
}

func TestAFailedHandBackIsTriedAgain(t *testing.T) {
	rdb := newRedis(t)
	ctx := context.Background()
	l := New(rdb, Config{Prefix: "t:", TTL: 100 * time.Millisecond, Renew: time.Hour, Owner: "pod-c"})
	h := Holder{Queue: "crops", TaskID: "req-2~rescue-4", Attempt: 5, Owner: "pod-c"}
	list, err := l.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, list)
	_, _, err = l.Acquire(ctx, h)
	require.NoError(t, err)
	list, err = l.List(ctx)
	require.NoError(t, err)
	assert.Contains(t, list, h)

	rq := &requeuer{fail: true}
	require.Eventually(t, func() bool {
		_, err := l.Rescue(ctx, rq, 10)
		return err != nil
	}, 5*time.Second, 10*time.Millisecond)
	n, err := l.Count(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "the lease is put back for the next rescue")

	rq.mu.Lock()
	rq.fail = false
	rq.mu.Unlock()
	hs, err := l.Rescue(ctx, rq, 10)
	require.NoError(t, err)
	assert.Equal(t, []Holder{h}, hs, "put back expired: the next call hands it back at once")
}

func TestNilLeaseIsAlwaysHeld(t *testing.T) {
	var ls *Lease
	held, err := ls.Held(context.Background())
	require.NoError(t, err)
	assert.True(t, held)
	assert.NoError(t, ls.Release(context.Background()))
}

func TestMembersRoundTrip(t *testing.T) {
	for _, h := range []Holder{{"crops", "a", 1, "pod-1"}, {"crops:urgent", "b.c:d-e~rescue-12", 13, "host-42"}} {
		got, err := parseMember(h.member())
		require.NoError(t, err)
		assert.Equal(t, h, got)
	}
	for _, bad := range []string{"", "crops\nid", "crops\nid\n1", "crops\nid\nx\npod"} {
		_, err := parseMember(bad)
		assert.Error(t, err, "%q", bad)
	}
}
