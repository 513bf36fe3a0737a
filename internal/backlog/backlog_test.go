package backlog

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// recorder is an Enqueuer that remembers what it was fed, in order, and
// the entries it was told to drop.
type recorder struct {
	mu       sync.Mutex
	fed      []string
	dropped  []Entry
	hook     func(id string)
	fail     map[string]error
	dropFail error
}

func (r *recorder) Drop(_ context.Context, e Entry, _ *BadEntryError) error {
	if r.dropFail != nil {
		return r.dropFail
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropped = append(r.dropped, e)
	return nil
}

func (r *recorder) Feed(_ context.Context, id string, _ []byte) error {
	if err := r.fail[id]; err != nil {
		return err
	}
	if r.hook != nil {
		r.hook(id)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fed = append(r.fed, id)
	return nil
}

func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.fed...)
}

func newRedis(t *testing.T) *redis.Client {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func push(t *testing.T, b *Backlog, lane, tenant string, n int) {
	t.Helper()
	var es []Entry
	for i := range n {
		id := fmt.Sprintf("%s-%s-%04d", lane, tenant, i)
		es = append(es, Entry{Lane: lane, Tenant: tenant, RequestID: id, Payload: []byte(`{"requestId":"` + id + `"}`), At: time.Now()})
	}
	require.NoError(t, b.Push(context.Background(), es))
}

// window is a feeder that wants `per` requests each step (nothing is ever
// pending in asynq here).
func window(b *Backlog, r Enqueuer, per int, weights map[string]int) *Feeder {
	return b.NewFeeder(r, FeederConfig{Lead: time.Second, MinWindow: 1, Weights: weights,
		Rate: func(context.Context) (float64, error) { return float64(per), nil }})
}

func countBy(ids []string, prefix string) int {
	n := 0
	for _, id := range ids {
		if len(id) >= len(prefix) && id[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}

func TestLanesAreStrict(t *testing.T) {
	ctx := context.Background()
	b := New(newRedis(t), Config{})
	push(t, b, "backfill", "acme", 50)
	push(t, b, "normal", "acme", 5)
	// Within globex's urgent allowance (a quarter of 10/s for the 1 s
	// lead: 2.5); beyond it, see TestUrgentBudget.
	push(t, b, "urgent", "globex", 2)
	r := &recorder{}
	f := window(b, r, 10, nil)
	n, err := f.Step(ctx)
	require.NoError(t, err)
	assert.Equal(t, 10, n)
	got := r.ids()
	assert.Equal(t, 2, countBy(got[:2], "urgent-"), "urgent first: %v", got)
	assert.Equal(t, 5, countBy(got[2:7], "normal-"), "then normal: %v", got)
	assert.Equal(t, 3, countBy(got[7:], "backfill-"), "backfill takes what is left: %v", got)

	st, err := b.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, st, 1, "emptied lists leave the active set: %+v", st)
	assert.Equal(t, Stat{Lane: "backfill", Tenant: "acme", Len: 47, Oldest: st[0].Oldest}, st[0])
	assert.WithinDuration(t, time.Now(), st[0].Oldest, time.Minute)
	members, err := b.rdb.SMembers(ctx, b.ActiveKey()).Result()
	require.NoError(t, err)
	assert.Equal(t, []string{"backfill:acme"}, members)
}

func TestSharesFollowWeights(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights map[string]int
		wantA   float64
	}{
		{"equal", nil, 0.5},
		{"acme 3, globex 1", map[string]int{"acme": 3, "globex": 1}, 0.75},
		{"uneven window", map[string]int{"acme": 2, "globex": 1}, 2.0 / 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			b := New(newRedis(t), Config{})
			push(t, b, "normal", "acme", 1000)
			push(t, b, "normal", "globex", 1000)
			r := &recorder{}
			f := window(b, r, 7, tc.weights) // 7: shares are not whole per step
			for range 60 {
				_, err := f.Step(ctx)
				require.NoError(t, err)
			}
			got := r.ids()
			require.Len(t, got, 420)
			share := float64(countBy(got, "normal-acme")) / float64(len(got))
			assert.InDelta(t, tc.wantA, share, 0.01)
		})
	}
}

func TestATenantAloneGetsTheWholeWindow(t *testing.T) {
	ctx := context.Background()
	b := New(newRedis(t), Config{})
	push(t, b, "normal", "acme", 100)
	push(t, b, "normal", "globex", 3)
	r := &recorder{}
	f := window(b, r, 10, map[string]int{"acme": 1, "globex": 100})
	for range 3 {
		_, err := f.Step(ctx)
		require.NoError(t, err)
	}
	got := r.ids()
	assert.Len(t, got, 30, "work-conserving: globex's unused share goes to acme")
	assert.Equal(t, 3, countBy(got, "normal-globex"))
	assert.Equal(t, 3, countBy(got[:10], "normal-globex"), "its weight puts globex first")
}

func TestOneFeederAtATime(t *testing.T) {
	ctx := context.Background()
	rdb := newRedis(t)
	b := New(rdb, Config{})
	push(t, b, "normal", "acme", 100)
	r1, r2 := &recorder{}, &recorder{}
	f1 := b.NewFeeder(r1, FeederConfig{ID: "one", MinWindow: 5, LockTTL: time.Minute})
	f2 := b.NewFeeder(r2, FeederConfig{ID: "two", MinWindow: 5, LockTTL: time.Minute})
	for range 4 {
		_, err := f1.Step(ctx)
		require.NoError(t, err)
		_, err = f2.Step(ctx)
		require.NoError(t, err)
	}
	assert.True(t, f1.Leader())
	assert.False(t, f2.Leader())
	assert.Len(t, r1.ids(), 20)
	assert.Empty(t, r2.ids())

	// The leader's lock ends (it died): the other takes over.
	require.NoError(t, rdb.Del(ctx, f1.lockKey()).Err())
	_, err := f2.Step(ctx)
	require.NoError(t, err)
	assert.True(t, f2.Leader())
	assert.Len(t, r2.ids(), 5)
}

// Two feeders that read the same head (one paused past its lock) feed it
// twice, which asynq refuses by task id, and remove it once: nothing is
// lost.
func TestTwoFeedersOnTheSameHeadLoseNothing(t *testing.T) {
	ctx := context.Background()
	b := New(newRedis(t), Config{})
	push(t, b, "normal", "acme", 10)
	late := &recorder{}
	lateFeeder := window(b, late, 4, nil)
	var once sync.Once
	first := &recorder{}
	first.hook = func(string) {
		// While the first feeder is between reading and removing, the
		// second reads and removes the same four.
		once.Do(func() {
			n, err := lateFeeder.feedList(ctx, take{lane: "normal", tenant: "acme", n: 4})
			require.NoError(t, err)
			assert.Equal(t, 4, n)
		})
	}
	f := window(b, first, 4, nil)
	n, err := f.feedList(ctx, take{lane: "normal", tenant: "acme", n: 4})
	require.NoError(t, err)
	assert.Zero(t, n, "the head moved: the first feeder removes nothing")
	left, err := b.rdb.LLen(ctx, b.ListKey("normal", "acme")).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(6), left)
	assert.Equal(t, late.ids(), first.ids(), "both fed the same four")
}

// A failed enqueue leaves that entry and those after it at the head.
func TestAFailedFeedKeepsTheEntry(t *testing.T) {
	ctx := context.Background()
	b := New(newRedis(t), Config{})
	push(t, b, "normal", "acme", 5)
	r := &recorder{fail: map[string]error{"normal-acme-0002": fmt.Errorf("redis down")}}
	f := window(b, r, 5, nil)
	n, err := f.Step(ctx)
	require.Error(t, err)
	assert.Equal(t, 2, n)
	head, err := b.rdb.LIndex(ctx, b.ListKey("normal", "acme"), 0).Result()
	require.NoError(t, err)
	_, id, _, err := decode(head)
	require.NoError(t, err)
	assert.Equal(t, "normal-acme-0002", id)

	// An entry that can never be fed ends its request (Drop), not retried
	// forever; while Drop cannot record that, the entry stays.
	r.fail = map[string]error{"normal-acme-0002": &BadEntryError{Err: fmt.Errorf("unknown version")}}
	r.dropFail = fmt.Errorf("redis down")
	n, err = f.Step(ctx)
	require.Error(t, err)
	assert.Zero(t, n)
	assert.Empty(t, r.dropped)
	r.dropFail = nil
	n, err = f.Step(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.NotContains(t, r.ids(), "normal-acme-0002")
	require.Len(t, r.dropped, 1)
	assert.Equal(t, Entry{Lane: "normal", Tenant: "acme", RequestID: "normal-acme-0002", Payload: []byte(`{"requestId":"normal-acme-0002"}`),
		At: r.dropped[0].At}, r.dropped[0], "the entry as it was pushed, with its list's lane and tenant")
	assert.False(t, r.dropped[0].At.IsZero())
}

// An entry without even a request id has no request to fail: it is set
// aside, and the entries behind it go on.
func TestAnUnreadableEntryIsSetAside(t *testing.T) {
	ctx := context.Background()
	b := New(newRedis(t), Config{})
	require.NoError(t, b.rdb.RPush(ctx, b.ListKey("normal", "acme"), "garbage").Err())
	require.NoError(t, b.rdb.SAdd(ctx, b.ActiveKey(), Member("normal", "acme")).Err())
	push(t, b, "normal", "acme", 2)
	r := &recorder{}
	n, err := window(b, r, 5, nil).Step(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.Equal(t, []string{"normal-acme-0000", "normal-acme-0001"}, r.ids())
	kept, err := b.rdb.LRange(ctx, b.UnreadableKey(), 0, -1).Result()
	require.NoError(t, err)
	assert.Equal(t, []string{"garbage"}, kept)
}

// The TaskEnqueuer fails the request of an entry that can never be fed,
// with a code, counted in its batch; a record Redis lost is written again
// from what the entry carries.
func TestAnEntryThatCannotBeFedFailsItsRequest(t *testing.T) {
	ctx := context.Background()
	rdb := newRedis(t)
	client := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = client.Close() })
	st := records.NewStore(rdb, status.Config{})
	b := New(rdb, Config{})
	e := TaskEnqueuer{Client: client, Records: st}
	accepted := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	_, err := st.CreateMany(ctx, []status.Record{
		{RequestID: "garbled", Params: tasks.Params{BatchID: "cat", Tenant: "acme", Priority: "backfill"}},
		{RequestID: "lost-id-only", Params: tasks.Params{BatchID: "cat", Tenant: "acme", Priority: "backfill"}},
		{RequestID: "lost-v9", Params: tasks.Params{BatchID: "cat", Tenant: "acme", Priority: "backfill"}},
		{RequestID: "waits", Params: tasks.Params{BatchID: "cat", Tenant: "acme", Priority: "backfill"}},
	})
	require.NoError(t, err)
	require.NoError(t, rdb.Del(ctx, st.Key("lost-id-only"), st.Key("lost-v9")).Err())
	v9 := `{"v":9,"requestId":"lost-v9","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":800,"targetHeight":600,"batchId":"cat","tenant":"acme","priority":"backfill"}`
	require.NoError(t, b.Push(ctx, []Entry{
		{Lane: "backfill", Tenant: "acme", RequestID: "garbled", Payload: []byte(`{"v":1,"requestId":`), At: accepted},
		{Lane: "backfill", Tenant: "acme", RequestID: "lost-id-only", BatchID: "cat", At: accepted},
		{Lane: "backfill", Tenant: "acme", RequestID: "lost-v9", Payload: []byte(v9), At: accepted},
	}))
	f := window(b, e, 10, nil)
	n, err := f.Step(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	size, err := b.Size(ctx)
	require.NoError(t, err)
	assert.Zero(t, size)

	for _, c := range []struct {
		id, code, url string
		batch         string
	}{
		{id: "garbled", code: "bad_entry", batch: "cat"},
		{id: "lost-id-only", code: "record_lost", batch: "cat"},
		{id: "lost-v9", code: "bad_entry", url: "https://cdn.example.com/a.jpg", batch: "cat"},
	} {
		rec, err := st.Get(ctx, c.id)
		require.NoError(t, err, c.id)
		assert.Equal(t, status.Failed, rec.State, c.id)
		assert.Equal(t, c.code, rec.ErrorCode, c.id)
		assert.NotEmpty(t, rec.ErrorMessage, c.id)
		assert.Equal(t, "acme", rec.Tenant, c.id)
		assert.Equal(t, "backfill", rec.Priority, c.id)
		assert.Equal(t, c.url, rec.SourceURL, c.id)
		assert.Equal(t, c.batch, rec.BatchID, c.id)
		if c.id != "garbled" {
			assert.Equal(t, accepted, rec.CreatedAt, "%s: accepted when its entry was", c.id)
		}
	}
	counts, err := st.BatchCounts(ctx, "acme", "cat")
	require.NoError(t, err)
	// lost-id-only's entry names its batch: the batch counts it failed, and
	// only "waits" as queued.
	assert.Equal(t, map[status.State]int64{status.Queued: 1, status.Failed: 3}, counts)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	_, err = insp.GetQueueInfo(tasks.DefaultQueue)
	assert.Error(t, err, "nothing was fed into asynq")
}

func TestEstimate(t *testing.T) {
	stats := []Stat{
		{Lane: "urgent", Tenant: "x", Len: 20},
		{Lane: "normal", Tenant: "acme", Len: 6000},
		{Lane: "normal", Tenant: "globex", Len: 300},
		{Lane: "backfill", Tenant: "acme", Len: 100000},
	}
	sec := func(d time.Duration) float64 { return d.Seconds() }
	// Urgent first (1 s at 20/s), then globex's 300 at half of 20/s.
	assert.InDelta(t, 1+30, sec(Estimate(stats, nil, 20, "normal", "globex", 300)), 0.01)
	// Weighted 3:1 against globex: a quarter of the rate.
	assert.InDelta(t, 1+60, sec(Estimate(stats, map[string]int{"acme": 3}, 20, "normal", "globex", 300)), 0.01)
	// acme's 6000 at half the rate until globex is done (300 each, 30 s),
	// then alone: 5700 more at 20/s.
	assert.InDelta(t, 1+30+285, sec(Estimate(stats, nil, 20, "normal", "acme", 6000)), 0.01)
	// Backfill waits for everything above it.
	assert.InDelta(t, (20+6300+100000)/20.0, sec(Estimate(stats, nil, 20, "backfill", "acme", 10)), 0.01)
	// Nothing waiting yet but the batch itself (in flight).
	assert.InDelta(t, 5, sec(Estimate(nil, nil, 20, "normal", "solo", 100)), 0.01)
	assert.Equal(t, time.Duration(0), Estimate(stats, nil, 20, "normal", "acme", 0))
	assert.Equal(t, time.Duration(-1), Estimate(stats, nil, 0, "normal", "acme", 10))
}

// An archived task of an earlier request with the same id (whose record
// expired long ago) does not swallow a request submitted again: the feeder
// replaces it. The request's own fed task is left alone.
func TestAnArchivedTaskDoesNotSwallowANewRequest(t *testing.T) {
	ctx := context.Background()
	rdb := newRedis(t)
	client := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = client.Close() })
	insp := asynq.NewInspectorFromRedisClient(rdb)
	st := records.NewStore(rdb, status.Config{})
	_, err := client.Enqueue(asynq.NewTask(tasks.TypeCrop, []byte(`{}`)), asynq.TaskID("again-1"), asynq.Queue(tasks.DefaultQueue))
	require.NoError(t, err)
	require.NoError(t, insp.ArchiveTask(tasks.DefaultQueue, "again-1"))
	_, _, err = st.Create(ctx, status.Record{RequestID: "again-1", SourceURL: "https://cdn.example.com/a.jpg", Params: tasks.Params{TargetWidth: 800, TargetHeight: 800}})
	require.NoError(t, err)

	e := TaskEnqueuer{Client: client, Records: st, Inspector: insp}
	require.NoError(t, e.Feed(ctx, "again-1", nil))
	info, err := insp.GetTaskInfo(tasks.DefaultQueue, "again-1")
	require.NoError(t, err)
	assert.Equal(t, asynq.TaskStatePending, info.State, "fed again")
	p, err := tasks.ParseCropPayload(info.Payload)
	require.NoError(t, err)
	assert.Equal(t, "https://cdn.example.com/a.jpg", p.ImageURL, "rebuilt from the record")

	require.NoError(t, e.Feed(ctx, "again-1", nil), "its own task: a repeated feed is harmless")
	n, err := insp.GetQueueInfo(tasks.DefaultQueue)
	require.NoError(t, err)
	assert.Equal(t, 1, n.Pending)
	assert.Zero(t, n.Archived)
}

// Only the leader rescues, and only once it has led for RescueGrace: after
// a Redis outage took its lock, live workers get time to renew their crop leases.
func TestOnlyASettledLeaderRescues(t *testing.T) {
	ctx := context.Background()
	rdb := newRedis(t)
	b := New(rdb, Config{})
	var calls [2]atomic.Int32
	feeder := func(i int, id string) *Feeder {
		return b.NewFeeder(&recorder{}, FeederConfig{ID: id, LockTTL: time.Minute, RescueEvery: time.Nanosecond, RescueGrace: 300 * time.Millisecond,
			Rescue: func(context.Context) error { calls[i].Add(1); return nil }})
	}
	f1, f2 := feeder(0, "one"), feeder(1, "two")
	step := func(f *Feeder) {
		_, err := f.Step(ctx)
		require.NoError(t, err)
	}
	step(f1)
	step(f2)
	assert.Zero(t, calls[0].Load(), "a new leader waits out the grace")
	require.Eventually(t, func() bool { step(f1); step(f2); return calls[0].Load() > 0 }, 5*time.Second, 10*time.Millisecond)
	assert.Zero(t, calls[1].Load(), "a follower never rescues")

	// The lock is lost (Redis restarted empty, or refused its renewal):
	// leading again, it waits again.
	require.NoError(t, rdb.Del(ctx, f1.lockKey()).Err())
	require.NoError(t, rdb.Set(ctx, f1.lockKey(), "someone-else", time.Minute).Err())
	step(f1)
	assert.False(t, f1.Leader())
	require.NoError(t, rdb.Del(ctx, f1.lockKey()).Err())
	before := calls[0].Load()
	step(f1)
	assert.True(t, f1.Leader())
	assert.Equal(t, before, calls[0].Load(), "leading anew, the grace starts again")
}

// pusher is a Refiller that appends n entries to a list at each call (as
// the manifest reader creates requests), counting its calls.
type pusher struct {
	b     *Backlog
	n     int
	calls atomic.Int32
}

func (p *pusher) Refill(ctx context.Context) error {
	k := int(p.calls.Add(1))
	var es []Entry
	for i := range p.n {
		id := fmt.Sprintf("refill-%d-%d", k, i)
		es = append(es, Entry{Lane: "normal", Tenant: "acme", RequestID: id, Payload: []byte(`{"requestId":"` + id + `"}`), At: time.Now()})
	}
	return p.b.Push(ctx, es)
}

// Only the leader refills, before it feeds: what it adds is fed in the
// same step.
func TestOnlyTheLeaderRefills(t *testing.T) {
	ctx := context.Background()
	b := New(newRedis(t), Config{})
	p1, p2 := &pusher{b: b, n: 3}, &pusher{b: b, n: 3}
	r1 := &recorder{}
	f1 := b.NewFeeder(r1, FeederConfig{ID: "one", MinWindow: 5, LockTTL: time.Minute, Refiller: p1})
	f2 := b.NewFeeder(&recorder{}, FeederConfig{ID: "two", MinWindow: 5, LockTTL: time.Minute, Refiller: p2})
	n, err := f1.Step(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, n, "the entries the refill added")
	_, err = f2.Step(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 1, p1.calls.Load())
	assert.Zero(t, p2.calls.Load(), "a feeder without the lock reads no manifest")
	assert.Equal(t, []string{"refill-1-0", "refill-1-1", "refill-1-2"}, r1.ids())
}
