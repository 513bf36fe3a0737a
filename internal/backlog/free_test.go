package backlog

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// byPrefix classifies as free the entries whose request id starts with
// prefix (what package dedup's index would say of a re-sync's lines).
type byPrefix string

func (p byPrefix) Free(_ context.Context, es []Entry) ([]bool, error) {
	out := make([]bool, len(es))
	for i, e := range es {
		out[i] = strings.HasPrefix(e.RequestID, string(p))
	}
	return out, nil
}

func pushIDs(t *testing.T, b *Backlog, lane, tenant string, ids ...string) {
	t.Helper()
	var es []Entry
	for _, id := range ids {
		es = append(es, Entry{Lane: lane, Tenant: tenant, RequestID: id, Payload: []byte(`{"requestId":"` + id + `"}`), At: time.Now()})
	}
	require.NoError(t, b.Push(context.Background(), es))
}

func seq(prefix string, n int) []string {
	var ids []string
	for i := range n {
		ids = append(ids, prefix+"-"+string(rune('a'+i/26))+string(rune('a'+i%26)))
	}
	return ids
}

// Work likely free goes to the free window, sized on its own; paid work
// behind it in the same list is fed to the paid window at once, not after
// the free work ahead of it.
func TestFreeWorkHasAWindowOfItsOwn(t *testing.T) {
	ctx := context.Background()
	b := New(newRedis(t), Config{})
	resync, fresh := seq("resync", 30), seq("new", 5)
	pushIDs(t, b, "normal", "acme", resync...)
	pushIDs(t, b, "normal", "acme", fresh...)
	paid, free := &recorder{}, &recorder{}
	f := b.NewFeeder(paid, FeederConfig{Lead: time.Second, MinWindow: 1, Rate: func(context.Context) (float64, error) { return 2, nil },
		Classify: byPrefix("resync"), FreeQueue: "crops-free", FreeEnqueuer: free, FreeWindow: 10})

	n, err := f.Step(ctx)
	require.NoError(t, err)
	assert.Equal(t, 12, n)
	assert.Equal(t, resync[:10], free.ids(), "the free window fills in order")
	assert.Equal(t, fresh[:2], paid.ids(), "the paid window takes the new listings behind the re-sync")

	for range 3 {
		_, err := f.Step(ctx)
		require.NoError(t, err)
	}
	assert.Equal(t, resync, free.ids())
	assert.Equal(t, fresh, paid.ids())
	left, err := b.rdb.LLen(ctx, b.ListKey("normal", "acme")).Result()
	require.NoError(t, err)
	assert.Zero(t, left, "everything fed leaves the list")
	members, err := b.rdb.SMembers(ctx, b.ActiveKey()).Result()
	require.NoError(t, err)
	assert.Empty(t, members)
}

// The feeder's knowledge of a list is checked against it: entries removed
// behind its back (another feeder during a pause) are read again, never
// fed twice by this one, and none is lost.
func TestFreeScanFollowsTheList(t *testing.T) {
	ctx := context.Background()
	b := New(newRedis(t), Config{})
	ids := seq("resync", 6)
	pushIDs(t, b, "normal", "acme", ids...)
	paid, free := &recorder{}, &recorder{}
	f := b.NewFeeder(paid, FeederConfig{Lead: time.Second, MinWindow: 1, Rate: func(context.Context) (float64, error) { return 1, nil },
		Classify: byPrefix("resync"), FreeQueue: "crops-free", FreeEnqueuer: free, FreeWindow: 2})
	_, err := f.Step(ctx)
	require.NoError(t, err)
	assert.Equal(t, ids[:2], free.ids())
	// Someone else takes the next one.
	require.NoError(t, b.rdb.LPop(ctx, b.ListKey("normal", "acme")).Err())
	pushIDs(t, b, "normal", "acme", "new-1")
	for range 3 {
		_, err := f.Step(ctx)
		require.NoError(t, err)
	}
	assert.Equal(t, append(ids[:2:2], ids[3:]...), free.ids())
	assert.Equal(t, []string{"new-1"}, paid.ids())
}

// spent is a tenant budget with nothing left (package budget's Budgets).
type spent string

func (s spent) Left(_ context.Context, tenants []string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, t := range tenants {
		if t == string(s) {
			out[t] = 0
		}
	}
	return out, nil
}

// A tenant that spent its budget still gets its work that needs no call
// fed (it costs nothing), while its paid work waits.
func TestFreeWorkIsFedWhateverTheBudget(t *testing.T) {
	ctx := context.Background()
	b := New(newRedis(t), Config{})
	resync, fresh := seq("resync", 4), seq("new", 3)
	pushIDs(t, b, "normal", "acme", resync...)
	pushIDs(t, b, "normal", "acme", fresh...)
	paid, free := &recorder{}, &recorder{}
	f := b.NewFeeder(paid, FeederConfig{Lead: time.Second, MinWindow: 1, Rate: func(context.Context) (float64, error) { return 5, nil },
		Classify: byPrefix("resync"), FreeQueue: "crops-free", FreeEnqueuer: free, FreeWindow: 10, Budgets: spent("acme")})
	for range 3 {
		_, err := f.Step(ctx)
		require.NoError(t, err)
	}
	assert.Equal(t, resync, free.ids(), "free work flows")
	assert.Empty(t, paid.ids(), "paid work waits for the next period")
	left, err := b.rdb.LLen(ctx, b.ListKey("normal", "acme")).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 3, left)
}
