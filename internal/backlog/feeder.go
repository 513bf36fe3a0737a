package backlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/lock"
	"github.com/cropq/cropq/internal/rediskey"
)

// Enqueuer moves one request into asynq. A request whose task exists
// already is not an error: a repeated feed must be harmless.
type Enqueuer interface {
	Feed(ctx context.Context, requestID string, payload []byte) error
	// Drop ends, as failed with a code, the request of an entry that can
	// never be fed (Feed returned cause), so that its record and its
	// batch tell of it: the entry leaves its list only once Drop did.
	Drop(ctx context.Context, e Entry, cause *BadEntryError) error
}

// Demoter records that a request is fed in a lower lane than its own
// (records.Store.ServedAs, and a metric), before it is fed.
type Demoter interface {
	Demote(ctx context.Context, tenant, requestID, lane string) error
}

// Refiller tops the backlog up from elsewhere (package manifest's reader):
// the leader runs it each step, before it feeds.
type Refiller interface {
	Refill(ctx context.Context) error
}

// Budgets tells the paid calls left this period to the tenants that have
// a budget (package budget's Budgets); a tenant missing from the answer
// has no cap.
type Budgets interface {
	Left(ctx context.Context, tenants []string) (map[string]int64, error)
}

// DefaultLead is FeederConfig.Lead's default.
const DefaultLead = 2 * time.Second

// DefaultUrgentShare is FeederConfig.UrgentShare's default.
const DefaultUrgentShare = 0.25

// FeederConfig configures a Feeder. Zero values take defaults.
type FeederConfig struct {
	// Queue is the asynq queue the feeder fills (default "crops").
	Queue string
	// Lead is how many seconds of calls, at the effective rate, are kept in
	// asynq (pending and running) ahead of the workers (default 3s): enough
	// that the workers never starve, little enough that a request arriving
	// in a higher lane or for a starved tenant waits about Lead at most.
	Lead time.Duration
	// MinWindow and MaxWindow bound that window in tasks (default 2, 1,000).
	MinWindow, MaxWindow int
	// Tick is how often the window is topped up (default 100ms).
	Tick time.Duration
	// LockTTL is how long the feeder's leadership lock lives without a
	// renewal (default 5s): another process takes over this long after the
	// feeding one dies.
	LockTTL time.Duration
	// Weights are the tenants' shares within a lane; unlisted tenants weigh 1.
	Weights map[string]int
	// UrgentShare is the part of the effective rate each tenant's urgent
	// work may take while another tenant has urgent or normal work
	// (default DefaultUrgentShare), scaled by the tenant's weight over the
	// mean weight of the tenants with work. Beyond it, the tenant's urgent
	// entries are fed in the normal lane as its normal work, and what it
	// takes in the urgent lane counts against its share of the normal
	// lane. 1 or more turns the budget off. See budget.go.
	UrgentShare float64
	// Demoter, when set, is told of each request fed below its lane.
	Demoter Demoter
	// Budgets, when set, keeps a tenant's entries waiting while its budget
	// of paid calls is spent, and feeds it no more entries in a tick than
	// it has calls left: its lanes' share goes to the others meanwhile.
	Budgets Budgets
	// Rate returns the fleet's effective API calls per second.
	Rate func(ctx context.Context) (float64, error)
	// Rescue, when set, is run by the leader about every RescueEvery
	// (default 1s): the fleet's one rescuer of crops whose worker stopped
	// renewing its crop lease (package lease's Leases.Rescue).
	Rescue      func(ctx context.Context) error
	RescueEvery time.Duration
	// RescueGrace is how long a feeder must have held its lock before it
	// rescues (default 5s). A Redis outage (down, or refusing writes) also
	// takes the lock away (its renewal is a write), so afterwards every
	// live worker gets this long to renew the crop leases it could not renew
	// meanwhile, and only the dead ones' crops move.
	RescueGrace time.Duration
	// Refiller, when set, is run by the leader each step (its errors are
	// logged): one process of the fleet reads the manifests.
	Refiller Refiller
	// Now is the clock of the urgent allowances (default time.Now).
	Now func() time.Time
	// ID names this feeder in the lock (default host, pid and a random part).
	ID     string
	Logger *slog.Logger

	// Classify, FreeQueue and FreeEnqueuer, all set, feed the entries
	// likely to need no paid call into FreeQueue through FreeEnqueuer,
	// keeping FreeWindow tasks there (default DefaultFreeWindow: size it by
	// the workers' concurrency, not the quota); the paid window then takes
	// the other entries wherever they are in the first ScanDepth of a list
	// (see free.go). ScanStep entries of a list are classified per tick.
	Classify            Classifier
	FreeQueue           string
	FreeEnqueuer        Enqueuer
	FreeWindow          int
	ScanDepth, ScanStep int
}

// Feeder keeps asynq's window filled from the backlog. Run it in every
// worker process: one at a time holds the leadership lock and feeds.
type Feeder struct {
	b   *Backlog
	enq Enqueuer
	cfg FeederConfig
	log *slog.Logger

	mu      sync.Mutex
	deficit map[string]float64 // per lane:tenant, carried between ticks
	urgent  *buckets           // each tenant's urgent allowance
	leader  bool
	since   time.Time            // leading since
	rescued time.Time            // last rescue run
	scans   map[string]*listScan // with a Classifier: what is known of each list's head
}

// NewFeeder returns a feeder of b through enq.
func (b *Backlog) NewFeeder(enq Enqueuer, cfg FeederConfig) *Feeder {
	if cfg.Queue == "" {
		cfg.Queue = "crops"
	}
	if cfg.Lead <= 0 {
		cfg.Lead = DefaultLead
	}
	if cfg.MinWindow <= 0 {
		cfg.MinWindow = 2
	}
	if cfg.MaxWindow <= 0 {
		cfg.MaxWindow = 1000
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 100 * time.Millisecond
	}
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = 5 * time.Second
	}
	if cfg.RescueEvery <= 0 {
		cfg.RescueEvery = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UrgentShare <= 0 {
		cfg.UrgentShare = DefaultUrgentShare
	}
	if cfg.RescueGrace <= 0 {
		cfg.RescueGrace = 5 * time.Second
	}
	if cfg.FreeWindow <= 0 {
		cfg.FreeWindow = DefaultFreeWindow
	}
	if cfg.ScanDepth <= 0 {
		cfg.ScanDepth = DefaultScanDepth
	}
	if cfg.ScanStep <= 0 {
		cfg.ScanStep = DefaultScanStep
	}
	if cfg.FreeQueue == "" || cfg.FreeEnqueuer == nil {
		cfg.Classify = nil
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		var r [4]byte
		_, _ = rand.Read(r[:])
		cfg.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(r[:]))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Feeder{b: b, enq: enq, cfg: cfg, log: log.With("component", "feeder"), deficit: map[string]float64{}, urgent: newBuckets(),
		scans: map[string]*listScan{}}
}

// Weight is tenant's weight.
func (f *Feeder) Weight(tenant string) int {
	if w, ok := f.cfg.Weights[tenant]; ok && w > 0 {
		return w
	}
	return 1
}

// Run feeds every Tick until ctx ends, then gives up the lock.
func (f *Feeder) Run(ctx context.Context) error {
	t := time.NewTicker(f.cfg.Tick)
	defer t.Stop()
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = f.leadership().Release(rctx, f.cfg.ID)
	}()
	for {
		if _, err := f.Step(ctx); err != nil && ctx.Err() == nil {
			f.log.WarnContext(ctx, "feeder: step", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// leadership is the feeder's leadership lock: its holder is the fleet's one
// feeder (and rescuer of crop leases).
func (f *Feeder) leadership() lock.Lock { return lock.New(f.b.rdb, f.lockKey()) }

func (f *Feeder) lockKey() string { return rediskey.Prefix(f.b.cfg.Prefix).FeederLock() }

// Leader reports whether this feeder held the lock at its last step.
func (f *Feeder) Leader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}

// Step takes or renews the lock and, holding it, tops the window up once.
// It returns how many requests it fed.
func (f *Feeder) Step(ctx context.Context) (int, error) {
	ok, err := f.lead(ctx)
	f.mu.Lock()
	if !ok && f.leader {
		// A new leader starts afresh (see budget.go for the allowances).
		f.deficit, f.urgent, f.scans = map[string]float64{}, newBuckets(), map[string]*listScan{}
	}
	if ok && !f.leader {
		f.since = time.Now()
	}
	f.leader = ok
	f.mu.Unlock()
	if err != nil || !ok {
		return 0, err
	}
	f.rescue(ctx)
	if f.cfg.Refiller != nil {
		if err := f.cfg.Refiller.Refill(ctx); err != nil && ctx.Err() == nil {
			f.log.WarnContext(ctx, "feeder: refill", "err", err)
		}
	}
	need, rate, err := f.need(ctx)
	if err != nil {
		return 0, err
	}
	room := 0
	if f.cfg.Classify != nil {
		if room, err = f.freeRoom(ctx); err != nil {
			return 0, err
		}
	}
	if need <= 0 && room <= 0 {
		return 0, nil
	}
	return f.feed(ctx, need, rate, room)
}

// rescue runs the rescuer when it is due; its errors are logged, never a
// reason not to feed.
func (f *Feeder) rescue(ctx context.Context) {
	f.mu.Lock()
	since := f.since
	f.mu.Unlock()
	if f.cfg.Rescue == nil || time.Since(f.rescued) < f.cfg.RescueEvery || time.Since(since) < f.cfg.RescueGrace {
		return
	}
	f.rescued = time.Now()
	if err := f.cfg.Rescue(ctx); err != nil && ctx.Err() == nil {
		f.log.WarnContext(ctx, "feeder: rescue", "err", err)
	}
}

// lead takes the lock, or renews it when this feeder holds it, and
// reports whether it does.
func (f *Feeder) lead(ctx context.Context) (bool, error) {
	holder, err := f.leadership().Acquire(ctx, f.cfg.ID, f.cfg.LockTTL)
	if err != nil {
		return false, fmt.Errorf("feeder: %w", err)
	}
	return holder == f.cfg.ID, nil
}

// need is how many requests the window lacks: its target, the effective
// rate × Lead, less what asynq holds pending or running; and that rate.
func (f *Feeder) need(ctx context.Context) (int, float64, error) {
	rate := 0.0
	if f.cfg.Rate != nil {
		r, err := f.cfg.Rate(ctx)
		if err != nil {
			return 0, 0, fmt.Errorf("feeder: rate: %w", err)
		}
		rate = r
	}
	target := int(math.Ceil(rate * f.cfg.Lead.Seconds()))
	target = min(max(target, f.cfg.MinWindow), f.cfg.MaxWindow)
	// Tasks handed back that are due within the lead count too: otherwise
	// a burst of hand-backs would pump the backlog into asynq.
	held, err := f.b.InAsynq(ctx, f.cfg.Queue, time.Now().Add(f.cfg.Lead))
	if err != nil {
		return 0, 0, fmt.Errorf("feeder: window: %w", err)
	}
	return target - int(held), rate, nil
}

// InAsynq counts the crop tasks asynq holds in queue pending or running,
// and, when dueBy is set, those handed back (retry set) due by then. It
// reads asynq's keys: cheaper than its inspector, which samples memory.
func (b *Backlog) InAsynq(ctx context.Context, queue string, dueBy time.Time) (int64, error) {
	pipe := b.rdb.Pipeline()
	pending := pipe.LLen(ctx, rediskey.AsynqPending(queue))
	active := pipe.LLen(ctx, rediskey.AsynqActive(queue))
	var retrying *redis.IntCmd
	if !dueBy.IsZero() {
		retrying = pipe.ZCount(ctx, rediskey.AsynqRetry(queue), "-inf", strconv.FormatInt(dueBy.Unix(), 10))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	n := pending.Val() + active.Val()
	if retrying != nil {
		n += retrying.Val()
	}
	return n, nil
}

// take is how many entries to feed from one list; as, when set, is the
// lower lane they are served in (urgent entries beyond their tenant's
// allowance).
type take struct {
	lane, tenant string
	n            int
	as           string
}

// feed moves up to need entries into the paid window, lanes strictly,
// tenants by weight, and, with a Classifier, up to room free entries into
// the free window.
func (f *Feeder) feed(ctx context.Context, need int, rate float64, room int) (int, error) {
	members, err := f.b.rdb.SMembers(ctx, f.b.ActiveKey()).Result()
	if err != nil {
		return 0, fmt.Errorf("feeder: active lists: %w", err)
	}
	pipe := f.b.rdb.Pipeline()
	lens := map[string]*redis.IntCmd{}
	for _, m := range members {
		if lane, tenant, ok := splitMember(m); ok {
			lens[m] = pipe.LLen(ctx, f.b.ListKey(lane, tenant))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("feeder: lengths: %w", err)
	}
	avail := map[string]int{}
	for m, c := range lens {
		if c.Val() > 0 {
			avail[m] = int(c.Val())
		} else {
			f.retire(ctx, m)
		}
	}
	fed := 0
	if f.cfg.Classify != nil {
		// Work that needs no call is fed whatever the tenants' budgets:
		// it costs nothing. What is left in avail is the paid work.
		n, err := f.feedAhead(ctx, avail, room)
		fed += n
		if err != nil || need <= 0 {
			return fed, err
		}
	}
	if err := f.withinBudgets(ctx, avail); err != nil {
		return fed, err
	}
	feedList := f.feedList
	if f.cfg.Classify != nil {
		feedList = f.feedScanned
	}
	for _, t := range f.plan(avail, need, rate, f.cfg.Now()) {
		n, err := feedList(ctx, t)
		fed += n
		if err != nil {
			return fed, err
		}
	}
	return fed, nil
}

// withinBudgets lowers avail, the paid work, so that no tenant is fed
// more entries than it has paid calls left this period, its highest lanes
// first. Entries the free window takes (a reused result) are not counted:
// they need no call. The budget is checked again by the worker before
// paying.
func (f *Feeder) withinBudgets(ctx context.Context, avail map[string]int) error {
	if f.cfg.Budgets == nil || len(avail) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var tenants []string
	for m := range avail {
		if _, t, ok := splitMember(m); ok && !seen[t] {
			seen[t] = true
			tenants = append(tenants, t)
		}
	}
	left, err := f.cfg.Budgets.Left(ctx, tenants)
	if err != nil {
		return fmt.Errorf("feeder: budgets: %w", err)
	}
	for t, n := range left {
		for _, lane := range f.b.cfg.Lanes {
			m := Member(lane, t)
			if _, ok := avail[m]; !ok {
				continue
			}
			take := min(avail[m], int(min(n, math.MaxInt32)))
			n -= int64(take)
			if take == 0 {
				delete(avail, m)
			} else {
				avail[m] = take
			}
		}
	}
	return nil
}

// plan shares need among the lists with entries: the first lane with work
// first, and within a lane by weighted deficit round-robin, carrying each
// tenant's unspent fraction to the next tick. A lane that runs dry passes
// what is left to the next one. With the urgent budget (budget.go), a
// tenant's first-lane entries beyond its allowance join the second lane as
// its own work there, ahead of its own entries of that lane, and what it
// took in the first lane is charged against its share of the second.
func (f *Feeder) plan(avail map[string]int, need int, rate float64, now time.Time) []take {
	f.mu.Lock()
	defer f.mu.Unlock()
	lanes := f.b.cfg.Lanes
	byLane := map[string][]string{}
	for m, n := range avail {
		if l, t, ok := splitMember(m); ok && n > 0 {
			byLane[l] = append(byLane[l], t)
		}
	}
	allowance, demote := f.budget(lanes, byLane, rate, now)
	var out []take
	var first map[string]int // what each tenant took in the first lane
	over := map[string]int{} // its first-lane entries beyond its allowance
	for i, lane := range lanes {
		// The second lane is visited for its charges even with no calls
		// left to share: the urgent lane may have taken them all.
		if need <= 0 && (i != 1 || !demote) {
			break
		}
		tenants := byLane[lane]
		caps := map[string]int{}
		for _, t := range tenants {
			caps[t] = avail[Member(lane, t)]
		}
		var charge map[string]int
		switch {
		case i == 0 && demote:
			for _, t := range tenants {
				if a := allowance[t]; caps[t] > a {
					over[t], caps[t] = caps[t]-a, a
				}
			}
		case i == 1 && demote:
			for t, n := range over {
				if caps[t] == 0 {
					tenants = append(tenants, t)
				}
				caps[t] += n
			}
			charge = first
		}
		slices.Sort(tenants)
		got := f.share(lane, tenants, caps, charge, need)
		for _, t := range tenants {
			n := got[t]
			if n == 0 {
				continue
			}
			need -= n
			if i == 1 && over[t] > 0 {
				// The tenant's urgent entries first, in their order.
				d := min(n, over[t])
				out = append(out, take{lanes[0], t, d, lane})
				n -= d
			}
			if n > 0 {
				out = append(out, take{lane: lane, tenant: t, n: n})
			}
		}
		if i == 0 {
			first = got
			if allowance != nil {
				f.urgent.spend(got)
			}
		}
	}
	return out
}

// share deals need among tenants (sorted) of one lane, each up to caps[t],
// by weighted deficit round-robin: each tenant with entries left adds
// round × weight ÷ Σ weights to its deficit and takes the whole part;
// fractions carry to the next round and tick; a tenant that reached its
// cap loses its credit; when every share is under one entry, the largest
// deficit goes. charge[t] was taken by t in a higher lane this tick and
// counts as taken here: it is credited to the tenants with entries by
// weight and owed by t, whether or not this lane gets calls this tick.
func (f *Feeder) share(lane string, tenants []string, caps, charge map[string]int, need int) map[string]int {
	got := map[string]int{}
	if len(charge) > 0 {
		extra, sum := 0, 0
		for _, t := range tenants {
			if caps[t] > 0 {
				extra += charge[t]
				sum += f.Weight(t)
			}
		}
		for _, t := range tenants {
			if caps[t] > 0 && extra > 0 {
				f.deficit[Member(lane, t)] += float64(extra)*float64(f.Weight(t))/float64(sum) - float64(charge[t])
			}
		}
	}
	for need > 0 {
		var open []string
		sum := 0
		for _, t := range tenants {
			if caps[t] > got[t] {
				open = append(open, t)
				sum += f.Weight(t)
			}
		}
		if len(open) == 0 {
			break
		}
		round, progress := need, false
		for _, t := range open {
			m := Member(lane, t)
			f.deficit[m] += float64(round) * float64(f.Weight(t)) / float64(sum)
			k := min(int(f.deficit[m]), caps[t]-got[t], need)
			if k > 0 {
				got[t] += k
				f.deficit[m] -= float64(k)
				need -= k
				progress = true
			}
		}
		if !progress {
			// Shares under one entry each: the largest deficit goes first.
			best := open[0]
			for _, t := range open {
				if f.deficit[Member(lane, t)] > f.deficit[Member(lane, best)] {
					best = t
				}
			}
			got[best]++
			f.deficit[Member(lane, best)]--
			need--
		}
	}
	for _, t := range tenants {
		if got[t] >= caps[t] {
			delete(f.deficit, Member(lane, t)) // emptied (or capped): no credit kept (DRR)
		}
	}
	return got
}

// feedList enqueues the first t.n entries of a list, then removes those it
// enqueued, provided they are still its head.
func (f *Feeder) feedList(ctx context.Context, t take) (int, error) {
	key := f.b.ListKey(t.lane, t.tenant)
	raws, err := f.b.rdb.LRange(ctx, key, 0, int64(t.n-1)).Result()
	if err != nil {
		return 0, fmt.Errorf("feeder: read %s: %w", key, err)
	}
	var done []any // the head of each entry fed: "millis id\n"
	var ferr error
	for _, raw := range raws {
		at, id, payload, err := decode(raw)
		var bad *BadEntryError
		if err == nil && t.as != "" && f.cfg.Demoter != nil {
			// Recorded before the task exists, so that no worker's
			// transition races it.
			err = f.cfg.Demoter.Demote(ctx, t.tenant, id, t.as)
		}
		if err == nil {
			err = f.enq.Feed(ctx, id, []byte(payload))
		}
		switch {
		case err == nil:
		case id == "":
			// No request to fail: kept aside, rather than block the list.
			if uerr := f.unreadable(ctx, raw); uerr != nil {
				ferr = fmt.Errorf("feeder: set aside an unreadable entry of %s: %w", key, uerr)
				break
			}
			f.log.ErrorContext(ctx, "feeder: an entry without a request id is set aside", "list", key, "kept_at", f.b.UnreadableKey(), "err", err)
		case errors.As(err, &bad):
			// Never fed: the request ends failed with a code (Drop), not
			// retried forever, nor dropped silently.
			e := Entry{Lane: t.lane, Tenant: t.tenant, RequestID: id, Payload: []byte(payload), At: at}
			if derr := f.enq.Drop(ctx, e, bad); derr != nil {
				ferr = fmt.Errorf("feeder: fail the request of an entry that cannot be fed, %s: %w", id, errors.Join(err, derr))
				break
			}
			f.log.WarnContext(ctx, "feeder: an entry that cannot be fed failed its request", "list", key, "request_id", id, "err", err)
		default:
			ferr = fmt.Errorf("feeder: enqueue %s: %w", id, err)
		}
		if ferr != nil {
			break
		}
		done = append(done, raw[:len(raw)-len(payload)])
	}
	if len(done) == 0 {
		return 0, ferr
	}
	n, err := popScript.Run(ctx, f.b.rdb, []string{key}, done...).Int()
	if err != nil {
		return 0, errors.Join(ferr, fmt.Errorf("feeder: remove fed entries of %s: %w", key, err))
	}
	f.retire(ctx, Member(t.lane, t.tenant))
	return n, ferr
}

// UnreadableKey is the list where the feeder sets aside entries it cannot
// even read a request id from (the last maxUnreadable of them), for an
// operator to look at: there is no request to fail.
func (b *Backlog) UnreadableKey() string { return rediskey.Prefix(b.cfg.Prefix).BacklogUnreadable() }

const maxUnreadable = 1000

func (f *Feeder) unreadable(ctx context.Context, raw string) error {
	pipe := f.b.rdb.Pipeline()
	pipe.RPush(ctx, f.b.UnreadableKey(), raw)
	pipe.LTrim(ctx, f.b.UnreadableKey(), -maxUnreadable, -1)
	_, err := pipe.Exec(ctx)
	return err
}

// retire drops an empty list from the active set; a producer that pushed
// meanwhile has added it again, and the length is checked after the
// removal so that no list with entries is left out.
func (f *Feeder) retire(ctx context.Context, member string) {
	lane, tenant, _ := splitMember(member)
	key := f.b.ListKey(lane, tenant)
	if n, err := f.b.rdb.LLen(ctx, key).Result(); err != nil || n > 0 {
		return
	}
	if err := f.b.rdb.SRem(ctx, f.b.ActiveKey(), member).Err(); err != nil {
		return
	}
	if n, err := f.b.rdb.LLen(ctx, key).Result(); err != nil || n > 0 {
		f.b.rdb.SAdd(ctx, f.b.ActiveKey(), member)
	}
}

// BadEntryError is an entry that can never be fed (a payload this version
// cannot read; Lost: an id-only entry whose record is gone): the feeder
// fails its request (Enqueuer.Drop) and removes it.
type BadEntryError struct {
	Lost bool
	Err  error
}

func (e *BadEntryError) Error() string { return "backlog: bad entry: " + e.Err.Error() }
func (e *BadEntryError) Unwrap() error { return e.Err }

// popScript removes entries from the head of KEYS[1] while the head starts
// with the next of ARGV (each entry's "millis id\n"): a second feeder (a
// lock lost during a pause) that fed the same entries removes nothing more.
var popScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or string.sub(head, 1, #ARGV[i]) ~= ARGV[i] then break end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
return n
`)
