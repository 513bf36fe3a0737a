package backlog

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/rediskey"
)

// demoter records each demotion, and whether its request had been fed
// already (it must not have: the record is written before the task exists).
type demoter struct {
	mu      sync.Mutex
	r       *recorder
	lanes   map[string]string // request id → lane served in
	tenants map[string]string
	late    []string
}

func newDemoter(r *recorder) *demoter {
	return &demoter{r: r, lanes: map[string]string{}, tenants: map[string]string{}}
}

func (d *demoter) Demote(_ context.Context, tenant, id, lane string) error {
	fed := slices.Contains(d.r.ids(), id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if fed {
		d.late = append(d.late, id)
	}
	d.lanes[id], d.tenants[id] = lane, tenant
	return nil
}

// pushFrom appends entries lane-tenant-from … lane-tenant-(from+n-1).
func pushFrom(t *testing.T, b *Backlog, lane, tenant string, from, n int) {
	t.Helper()
	var es []Entry
	for i := from; i < from+n; i++ {
		id := fmt.Sprintf("%s-%s-%04d", lane, tenant, i)
		es = append(es, Entry{Lane: lane, Tenant: tenant, RequestID: id, Payload: []byte(`{"requestId":"` + id + `"}`), At: time.Now()})
	}
	require.NoError(t, b.Push(context.Background(), es))
}

// budgetRun is what a budgeted feeder fed, tick by tick.
type budgetRun struct {
	ticks   [][]string
	demoted map[string]string
}

func (r budgetRun) all() []string { return slices.Concat(r.ticks...) }

// served counts the ids of prefix fed in their own lane (not demoted).
func (r budgetRun) served(prefix string) int {
	n := 0
	for _, id := range r.all() {
		if strings.HasPrefix(id, prefix) && r.demoted[id] == "" {
			n++
		}
	}
	return n
}

func (r budgetRun) demotedOf(prefix string) int {
	n := 0
	for id := range r.demoted {
		if strings.HasPrefix(id, prefix) {
			n++
		}
	}
	return n
}

// inOrder reports whether the ids of prefix were fed in their order.
func (r budgetRun) inOrder(prefix string) bool {
	last := -1
	for _, id := range r.all() {
		if !strings.HasPrefix(id, prefix) {
			continue
		}
		n, _ := strconv.Atoi(id[strings.LastIndex(id, "-")+1:])
		if n <= last {
			return false
		}
		last = n
	}
	return true
}

// The feeder runs as in a worker (100 ms ticks, a 2 s lead) against a
// stand-in for the workers that runs 20 tasks a second off asynq's pending
// list: the first tick fills the 40-task window, each later one tops it up
// by 2. Each tenant's urgent allowance is then a quarter of the rate (5/s,
// 10 at once) at equal weights.
func TestUrgentBudget(t *testing.T) {
	const rate, ticksPerSec = 20, 10
	for _, tc := range []struct {
		name    string
		share   float64
		weights map[string]int
		push    map[string]int // "lane:tenant" → entries queued up front
		secs    int
		each    func(t *testing.T, b *Backlog, sec int) // at the start of each second
		check   func(t *testing.T, run budgetRun)
	}{
		{
			name: "a tenant within its allowance is served strictly first",
			push: map[string]int{"urgent:acme": 10, "normal:globex": 100}, secs: 1,
			check: func(t *testing.T, run budgetRun) {
				assert.Len(t, run.ticks[0], 2*rate)
				assert.Equal(t, 10, countBy(run.ticks[0][:10], "urgent-acme"), "%v", run.ticks[0])
				assert.Empty(t, run.demoted)
			},
		},
		{
			name: "beyond it, the excess competes as the tenant's normal work",
			push: map[string]int{"urgent:acme": 1000, "normal:globex": 1000}, secs: 40,
			check: func(t *testing.T, run budgetRun) {
				all := run.all()
				// acme's urgent and demoted calls together are its half.
				assert.InDelta(t, 0.5, float64(countBy(all, "normal-globex"))/float64(len(all)), 0.02)
				assert.InDelta(t, 10+5*40, run.served("urgent-acme"), 3, "a quarter of the rate as urgent")
				assert.Equal(t, countBy(all, "urgent-acme")-run.served("urgent-acme"), run.demotedOf("urgent-acme"))
				assert.True(t, run.inOrder("urgent-acme"), "demoted from the head: acme's order holds")
				for _, tick := range run.ticks {
					// Within a tick, acme's allowance goes first (lanes stay strict).
					k := slices.IndexFunc(tick, func(id string) bool { return run.demoted[id] != "" || strings.HasPrefix(id, "normal-") })
					if k < 0 {
						k = len(tick)
					}
					assert.Equal(t, k, countBy(tick, "urgent-acme")-countDemoted(run, tick), "%v", tick)
				}
				for id, lane := range run.demoted {
					assert.Equal(t, "normal", lane, id)
				}
			},
		},
		{
			name: "another tenant's urgent remains urgent",
			push: map[string]int{"urgent:acme": 1000, "normal:globex": 1000}, secs: 20,
			each: func(t *testing.T, b *Backlog, sec int) { pushFrom(t, b, "urgent", "initech", sec, 1) },
			check: func(t *testing.T, run budgetRun) {
				for sec := range 20 {
					id := fmt.Sprintf("urgent-initech-%04d", sec)
					tick := run.ticks[sec*ticksPerSec]
					require.Contains(t, tick, id, "initech's urgent request is fed in the tick it arrives")
					k := slices.IndexFunc(tick, func(id string) bool { return run.demoted[id] != "" || strings.HasPrefix(id, "normal-") })
					assert.True(t, k < 0 || slices.Index(tick, id) < k, "in the urgent lane, ahead of the normal lane: %v", tick)
					assert.Empty(t, run.demoted[id])
				}
				assert.Positive(t, run.demotedOf("urgent-acme"))
			},
		},
		{
			name:    "weights scale the allowance",
			weights: map[string]int{"acme": 3, "globex": 1},
			push:    map[string]int{"urgent:acme": 1000, "urgent:globex": 1000}, secs: 40,
			check: func(t *testing.T, run budgetRun) {
				all := run.all()
				// 3:1 of a quarter of the rate, about the mean weight 2.
				assert.InDelta(t, 15+7.5*40, run.served("urgent-acme"), 3)
				assert.InDelta(t, 5+2.5*40, run.served("urgent-globex"), 3)
				assert.InDelta(t, 0.75, float64(countBy(all, "urgent-acme"))/float64(len(all)), 0.02, "shares stay the weights'")
			},
		},
		{
			name: "a tenant alone keeps the whole rate, undemoted",
			push: map[string]int{"urgent:acme": 1000, "normal:acme": 100, "backfill:globex": 100}, secs: 10,
			check: func(t *testing.T, run budgetRun) {
				assert.Equal(t, 2*rate+10*rate-2, countBy(run.all(), "urgent-acme"))
				assert.Empty(t, run.demoted, "a tenant alone delays nobody")
			},
		},
		{
			name: "demotion never leaves calls unused",
			push: map[string]int{"urgent:acme": 1000, "normal:globex": 30}, secs: 10,
			check: func(t *testing.T, run budgetRun) {
				assert.Len(t, run.ticks[0], 2*rate)
				for i, tick := range run.ticks[1:] {
					assert.Len(t, tick, 2, "tick %d tops the window up", i+1)
				}
				assert.Equal(t, 30, countBy(run.all(), "normal-globex"))
				last := slices.IndexFunc(run.ticks, func(tick []string) bool { return slices.Contains(tick, "normal-globex-0029") })
				for _, tick := range run.ticks[last+1:] {
					assert.Zero(t, countDemoted(run, tick), "globex is done: acme is alone again")
				}
			},
		},
		{
			name:  "share 1 turns the budget off",
			share: 1, push: map[string]int{"urgent:acme": 1000, "normal:globex": 100}, secs: 5,
			check: func(t *testing.T, run budgetRun) {
				assert.Equal(t, len(run.all()), countBy(run.all(), "urgent-acme"))
				assert.Empty(t, run.demoted)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			rdb := newRedis(t)
			b := New(rdb, Config{})
			for m, n := range tc.push {
				lane, tenant, _ := strings.Cut(m, ":")
				pushFrom(t, b, lane, tenant, 0, n)
			}
			pending := rediskey.AsynqPending("crops")
			r := &recorder{hook: func(id string) { rdb.RPush(ctx, pending, id) }}
			d := newDemoter(r)
			now := time.Unix(1_700_000_000, 0)
			f := b.NewFeeder(r, FeederConfig{Weights: tc.weights, UrgentShare: tc.share, Demoter: d,
				Now:  func() time.Time { return now },
				Rate: func(context.Context) (float64, error) { return rate, nil }})
			var run budgetRun
			for i := range tc.secs * ticksPerSec {
				if tc.each != nil && i%ticksPerSec == 0 {
					tc.each(t, b, i/ticksPerSec)
				}
				before := len(r.ids())
				_, err := f.Step(ctx)
				require.NoError(t, err)
				run.ticks = append(run.ticks, r.ids()[before:])
				now = now.Add(time.Second / ticksPerSec)
				require.NoError(t, rdb.LPopCount(ctx, pending, rate/ticksPerSec).Err()) // the workers ran 2
			}
			run.demoted = d.lanes
			assert.Empty(t, d.late, "demotions are recorded before the feed")
			for id, tenant := range d.tenants {
				assert.Equal(t, "urgent-"+tenant, id[:strings.LastIndex(id, "-")], "only urgent entries are demoted, under their tenant")
			}
			tc.check(t, run)
		})
	}
}

func countDemoted(run budgetRun, ids []string) int {
	n := 0
	for _, id := range ids {
		if run.demoted[id] != "" {
			n++
		}
	}
	return n
}
