// Package lease keeps a short crop lease on every crop a worker is
// running, so that the crops of a worker that died (kill -9, OOM, node
// loss) or froze (SIGSTOP, a stalled VM) run again elsewhere within
// seconds, not after asynq's own recovery (its 30 s task lease, plus 30 s,
// plus a once-a-minute recoverer: one to three minutes in v0.26, and not
// configurable).
//
// A holder adds its lease when an attempt starts and renews all of its
// leases every Renew; the fleet's one rescuer (the backlog feeder's leader)
// takes leases whose deadline passed and hands their crops back through a
// Requeuer. Deadlines are on Redis's clock (TIME, read inside the scripts),
// so workers whose clocks disagree still agree on when a lease ended.
//
// Crop leases are not the two locks of package lock (the feeder's
// leadership lock, the dedup claims on crop keys): many in one sorted set,
// renewed together, and taken away by a rescuer rather than let expire.
//
// Taking a lease away is atomic with respect to renewing it: once the
// rescuer has taken it, the holder's next renewal finds it gone and
// cancels the attempt's context (cause ErrLost), and Held says false, so a
// frozen worker that wakes up neither pays for nor writes over a crop that
// another task now owns (the status record refuses its writes as well).
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
)

// ErrLost is the cause of an attempt's context when its lease was taken
// away: the crop was handed to another task.
var ErrLost = errors.New("lease: lost (the crop was handed to another worker)")

// DefaultTTL is Config.TTL's default.
const DefaultTTL = 10 * time.Second

// Config configures Leases. Zero values take defaults.
type Config struct {
	// Prefix of the Redis key (default "cropq:").
	Prefix string
	// TTL is how long a lease lasts unrenewed (default 10s): a dead worker's
	// crops are handed back about TTL after it stopped renewing.
	TTL time.Duration
	// Renew is how often a holder renews its leases (default TTL/5), so
	// that a few slow renewals in a row do not lose a live worker's crops.
	Renew time.Duration
	// Owner names this process in its leases, for operators and logs
	// (default host and pid).
	Owner  string
	Logger *slog.Logger
}

// Holder names one attempt of one task: the lease's owner.
type Holder struct {
	Queue   string // asynq queue of the task
	TaskID  string // asynq task id
	Attempt int    // the attempt's number on the status record
	Owner   string // the process holding it (Config.Owner; set by Acquire)
}

func (h Holder) member() string {
	return h.Queue + "\n" + h.TaskID + "\n" + strconv.Itoa(h.Attempt) + "\n" + h.Owner
}

func parseMember(m string) (Holder, error) {
	parts := strings.Split(m, "\n")
	if len(parts) != 4 {
		return Holder{}, fmt.Errorf("lease: bad member %q", m)
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil {
		return Holder{}, fmt.Errorf("lease: bad member %q: %w", m, err)
	}
	return Holder{Queue: parts[0], TaskID: parts[1], Attempt: n, Owner: parts[3]}, nil
}

// Leases holds the leases of one worker process and renews them.
type Leases struct {
	rdb redis.UniversalClient
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	held map[string]context.CancelCauseFunc // by member
}

// New returns the leases of one process on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Leases {
	if cfg.Prefix == "" {
		cfg.Prefix = status.DefaultPrefix
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Renew <= 0 {
		cfg.Renew = cfg.TTL / 5
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Leases{rdb: rdb, cfg: cfg, log: log.With("component", "lease"), held: map[string]context.CancelCauseFunc{}}
}

// Key is the sorted set of leases: member "queue\ntask\nattempt\nowner",
// score the deadline in Redis milliseconds.
func (l *Leases) Key() string { return rediskey.Prefix(l.cfg.Prefix).CropLeases() }

// TTL is the leases' lifetime.
func (l *Leases) TTL() time.Duration { return l.cfg.TTL }

// Lease is one held lease.
type Lease struct {
	l      *Leases
	member string
}

// Acquire adds h's lease and returns a context, derived from ctx, that is
// canceled with cause ErrLost when the lease is taken away. Call Release
// when the attempt ends, whatever its outcome.
func (l *Leases) Acquire(ctx context.Context, h Holder) (context.Context, *Lease, error) {
	h.Owner = l.cfg.Owner
	m := h.member()
	if err := acquireScript.Run(ctx, l.rdb, []string{l.Key()}, m, l.cfg.TTL.Milliseconds()).Err(); err != nil {
		return ctx, nil, fmt.Errorf("lease: acquire: %w", err)
	}
	lctx, cancel := context.WithCancelCause(ctx)
	l.mu.Lock()
	if old := l.held[m]; old != nil {
		old(context.Canceled) // the same attempt twice in one process: the newer one holds it
	}
	l.held[m] = cancel
	l.mu.Unlock()
	return lctx, &Lease{l: l, member: m}, nil
}

// Held reports whether the lease is still this holder's and unexpired;
// ask it right before paying. A nil lease (no leases kept) is held.
func (ls *Lease) Held(ctx context.Context) (bool, error) {
	if ls == nil {
		return true, nil
	}
	n, err := heldScript.Run(ctx, ls.l.rdb, []string{ls.l.Key()}, ls.member).Int()
	if err != nil {
		return false, fmt.Errorf("lease: check: %w", err)
	}
	return n == 1, nil
}

// Release removes the lease (if the rescuer has not taken it) and stops
// renewing it. A nil lease releases nothing.
func (ls *Lease) Release(ctx context.Context) error {
	if ls == nil {
		return nil
	}
	ls.l.mu.Lock()
	if cancel := ls.l.held[ls.member]; cancel != nil {
		delete(ls.l.held, ls.member)
		cancel(context.Canceled)
	}
	ls.l.mu.Unlock()
	if err := ls.l.rdb.ZRem(ctx, ls.l.Key(), ls.member).Err(); err != nil {
		return fmt.Errorf("lease: release: %w", err)
	}
	return nil
}

// Run renews this process's leases every Renew until ctx ends, canceling
// the attempts whose lease was taken away. While Redis is away nothing is
// canceled: the rescuer cannot take anything either.
func (l *Leases) Run(ctx context.Context) {
	t := time.NewTicker(l.cfg.Renew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := l.RenewAll(ctx); err != nil && ctx.Err() == nil {
			l.log.WarnContext(ctx, "lease: renew", "err", err)
		}
	}
}

// RenewAll renews every held lease once and returns how many were lost.
func (l *Leases) RenewAll(ctx context.Context) (int, error) {
	l.mu.Lock()
	members := make([]any, 0, len(l.held))
	for m := range l.held {
		members = append(members, m)
	}
	l.mu.Unlock()
	if len(members) == 0 {
		return 0, nil
	}
	rctx, cancel := context.WithTimeout(ctx, l.cfg.Renew)
	defer cancel()
	lost, err := renewScript.Run(rctx, l.rdb, []string{l.Key()}, append([]any{l.cfg.TTL.Milliseconds()}, members...)...).StringSlice()
	if err != nil {
		return 0, fmt.Errorf("lease: renew: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range lost {
		if cancel := l.held[m]; cancel != nil {
			delete(l.held, m)
			cancel(ErrLost)
			h, _ := parseMember(m)
			l.log.WarnContext(ctx, "lease: lost; the crop was handed to another worker", "task_id", h.TaskID, "attempt", h.Attempt)
		}
	}
	return len(lost), nil
}

// Requeuer runs a crop again whose lease expired: the task h names was
// running on a worker that stopped renewing. It must be harmless to call
// twice for the same holder.
type Requeuer interface {
	Requeue(ctx context.Context, h Holder) error
}

// Rescue takes up to limit expired leases and hands their crops to rq. It
// returns the holders it handed back. A hand-back that fails puts the lease
// back, expired, for the next call. Run it in one process of the fleet at
// a time (it is safe in several, only wasteful).
func (l *Leases) Rescue(ctx context.Context, rq Requeuer, limit int) ([]Holder, error) {
	ms, err := takeScript.Run(ctx, l.rdb, []string{l.Key()}, limit).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("lease: take expired: %w", err)
	}
	var out []Holder
	var errs []error
	for _, m := range ms {
		h, err := parseMember(m)
		if err != nil {
			errs = append(errs, err) // not ours to run; dropped
			continue
		}
		if err := rq.Requeue(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("lease: hand back %s: %w", h.TaskID, err))
			// Expired (score 0) unless the holder came back meanwhile.
			if perr := l.rdb.ZAddNX(ctx, l.Key(), redis.Z{Score: 0, Member: m}).Err(); perr != nil {
				errs = append(errs, perr)
			}
			continue
		}
		out = append(out, h)
	}
	return out, errors.Join(errs...)
}

// List is every lease, held or expired, with its deadline on Redis's clock.
func (l *Leases) List(ctx context.Context) (map[Holder]time.Time, error) {
	zs, err := l.rdb.ZRangeWithScores(ctx, l.Key(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("lease: list: %w", err)
	}
	out := make(map[Holder]time.Time, len(zs))
	for _, z := range zs {
		m, _ := z.Member.(string)
		if h, err := parseMember(m); err == nil {
			out[h] = time.UnixMilli(int64(z.Score))
		}
	}
	return out, nil
}

// Count is how many leases exist (held or expired, not yet rescued).
func (l *Leases) Count(ctx context.Context) (int64, error) {
	return l.rdb.ZCard(ctx, l.Key()).Result()
}

// nowMs is Redis's clock in milliseconds, inside a script.
const nowMs = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// acquireScript: KEYS[1] leases, ARGV[1] member, ARGV[2] ttl ms.
var acquireScript = redis.NewScript(nowMs + `
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1`)

// heldScript: 1 when ARGV[1] holds an unexpired lease, 0 otherwise.
var heldScript = redis.NewScript(nowMs + `
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) < now then return 0 end
return 1`)

// renewScript: ARGV[1] ttl ms, ARGV[2..] members; extends those still
// present and returns those that are gone.
var renewScript = redis.NewScript(nowMs + `
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost`)

// takeScript: removes and returns up to ARGV[1] leases whose deadline passed.
var takeScript = redis.NewScript(nowMs + `
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1, 'LIMIT', 0, tonumber(ARGV[1]))
if #ms > 0 then redis.call('ZREM', KEYS[1], unpack(ms)) end
return ms`)
