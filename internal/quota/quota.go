// Package quota spends one API account's request quota across every worker
// process, through Redis: a GCRA limiter (github.com/go-redis/redis_rate)
// whose rate is adapted to the provider's answers, additive increase while
// calls succeed and multiplicative decrease on a rate-limit answer (AIMD),
// never above the configured ceiling. The effective rate lives in Redis, so a
// decrease seen by one pod slows every pod at its next call.
package quota

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
)

// Config configures a Limiter. Zero values take defaults.
type Config struct {
	// Account identifies the quota: the API app key. Only a hash of it is
	// used in Redis keys.
	Account string
	// Prefix of the Redis keys (default "cropq:").
	Prefix string
	// Rate is the ceiling, in calls per second for the whole fleet (default
	// 5, the vendor's default quota). Burst is the calls allowed at once
	// (default 2). With 1, a token nobody takes at the very moment it is due
	// is lost, and timer and Redis latency lose a few per cent of the quota;
	// 2 lets the fleet make that up without bursting further.
	Rate  float64
	Burst int
	// MaxWait is the longest a caller waits in place for a token (default
	// 5s, asynq's DelayedTaskCheckInterval: a hand-back would wait that long
	// anyway). Past it, Wait returns a *DeferError.
	MaxWait time.Duration

	// Adaptive turns AIMD on; off, the rate is always Rate.
	Adaptive bool
	// MinRate is the floor of the effective rate (default Rate/20).
	MinRate float64
	// Decrease multiplies the rate on a rate-limit answer (default 0.875).
	Decrease float64
	// Increase is the rate gained per second of successful calls (default
	// Rate/40 per second: about 40 s from 0 to the ceiling).
	Increase float64
	// Cooldown is the least time between two decreases (default 1s), so the
	// many rate-limit answers of one overshoot count once.
	Cooldown time.Duration

	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = status.DefaultPrefix
	}
	if c.Rate <= 0 {
		c.Rate = 5
	}
	if c.Burst <= 0 {
		c.Burst = 2
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 5 * time.Second
	}
	if c.MinRate <= 0 {
		c.MinRate = c.Rate / 20
	}
	c.MinRate = min(c.MinRate, c.Rate)
	if c.Decrease <= 0 || c.Decrease >= 1 {
		c.Decrease = 0.875
	}
	if c.Increase <= 0 {
		c.Increase = c.Rate / 40
	}
	if c.Cooldown <= 0 {
		c.Cooldown = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// DeferError says the wait for a token would exceed MaxWait: hand the task
// back for RetryAfter. It is a rate limit, not a failure.
type DeferError struct {
	RetryAfter time.Duration
}

func (e *DeferError) Error() string {
	return fmt.Sprintf("quota: no API token for %s (shared limiter)", e.RetryAfter.Round(time.Millisecond))
}

// RateLimitedFor is how long to wait before trying again (the worker's
// retry policy reads it through a small interface of its own).
func (e *DeferError) RateLimitedFor() time.Duration { return e.RetryAfter }

// State is the shared quota as stored in Redis.
type State struct {
	Account      string    `json:"account"` // hash of the app key
	Ceiling      float64   `json:"ceiling"`
	Effective    float64   `json:"effective"`
	Burst        int       `json:"burst"`
	Adaptive     bool      `json:"adaptive"`
	LastDecrease time.Time `json:"lastDecrease,omitzero"`
	Decreases    int64     `json:"decreases"`
}

// Limiter is safe for concurrent use; make one per process and account.
type Limiter struct {
	cfg      Config
	rdb      redis.UniversalClient
	gcra     *redis_rate.Limiter
	account  string
	stateKey string
	gcraKey  string

	// turn lets one waiter of this process ask Redis at a time; the others
	// queue here, so C busy slots do not poll the limiter C times a token.
	turn chan struct{}

	mu     sync.Mutex
	logged float64 // last effective rate logged by this process
}

// New returns a Limiter for cfg.Account on rdb (which the caller owns).
func New(rdb redis.UniversalClient, cfg Config) *Limiter {
	cfg = cfg.withDefaults()
	sum := sha256.Sum256([]byte(cfg.Account))
	acct := hex.EncodeToString(sum[:6])
	return &Limiter{
		cfg: cfg, rdb: rdb, gcra: redis_rate.NewLimiter(rdb), account: acct,
		// One hash tag: both keys live in one Redis Cluster slot.
		stateKey: rediskey.Prefix(cfg.Prefix).QuotaState(acct),
		gcraKey:  rediskey.Prefix(cfg.Prefix).QuotaGCRA(acct),
		logged:   cfg.Rate,
		turn:     make(chan struct{}, 1),
	}
}

// Wait takes one token, waiting in place up to MaxWait. It returns a
// *DeferError when the wait would be longer, and ctx's error if ctx ends.
func (l *Limiter) Wait(ctx context.Context) error {
	deadline := time.Now().Add(l.cfg.MaxWait)
	bound := time.NewTimer(l.cfg.MaxWait)
	defer bound.Stop()
	select {
	case l.turn <- struct{}{}:
		defer func() { <-l.turn }()
	case <-ctx.Done():
		return ctx.Err()
	case <-bound.C:
		// The waiters ahead of this one hold the process's turn that long.
		return &DeferError{RetryAfter: l.cfg.MaxWait}
	}
	for {
		rate, err := l.effective(ctx)
		if err != nil {
			return err
		}
		res, err := l.gcra.Allow(ctx, l.gcraKey, limitFor(rate, l.cfg.Burst))
		if err != nil {
			return fmt.Errorf("quota: take token: %w", err)
		}
		if res.Allowed > 0 {
			l.count(ctx, usageCalls)
			return nil
		}
		wait := res.RetryAfter
		if time.Now().Add(wait).After(deadline) {
			return &DeferError{RetryAfter: wait}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// limitFor expresses a fractional rate in redis_rate's integer Limit:
// rate×1000 calls per 1000 s has the same emission interval.
func limitFor(rate float64, burst int) redis_rate.Limit {
	return redis_rate.Limit{Rate: max(1, int(math.Round(rate*1000))), Period: 1000 * time.Second, Burst: burst}
}

// effective is the shared rate now (the ceiling when not adaptive).
func (l *Limiter) effective(ctx context.Context) (float64, error) {
	if !l.cfg.Adaptive {
		return l.cfg.Rate, nil
	}
	v, err := l.rdb.HGet(ctx, l.stateKey, "rate").Float64()
	switch {
	case errors.Is(err, redis.Nil):
		return l.cfg.Rate, nil
	case err != nil:
		return 0, fmt.Errorf("quota: read rate: %w", err)
	}
	return min(max(v, l.cfg.MinRate), l.cfg.Rate), nil
}

// Observe feeds a call's outcome back: a rate-limit answer lowers the shared
// rate (at most once per Cooldown), a success raises it a little.
func (l *Limiter) Observe(ctx context.Context, rateLimited bool) {
	if rateLimited {
		l.count(ctx, usageLimited)
	}
	if !l.cfg.Adaptive {
		return
	}
	var (
		res []any
		err error
	)
	if rateLimited {
		res, err = decreaseScript.Run(ctx, l.rdb, []string{l.stateKey},
			l.cfg.Rate, l.cfg.MinRate, l.cfg.Decrease, l.cfg.Cooldown.Milliseconds()).Slice()
	} else {
		rate, rerr := l.effective(ctx)
		if rerr != nil || rate >= l.cfg.Rate {
			return // at the ceiling: nothing to raise, no round trip spent
		}
		// About `rate` successes per second: each adds Increase/rate, so the
		// rate climbs by Increase per second.
		res, err = increaseScript.Run(ctx, l.rdb, []string{l.stateKey}, l.cfg.Rate, l.cfg.Increase/rate).Slice()
	}
	if err != nil {
		l.cfg.Logger.WarnContext(ctx, "quota: adapt rate", "err", err)
		return
	}
	newRate, _ := strconv.ParseFloat(fmt.Sprint(res[0]), 64)
	changed, _ := res[1].(int64)
	if changed == 0 {
		return
	}
	l.logChange(ctx, newRate, rateLimited)
}

// logChange logs every decrease, and increases each time the rate crosses a
// whole number or reaches the ceiling (not on every success).
func (l *Limiter) logChange(ctx context.Context, rate float64, decreased bool) {
	l.mu.Lock()
	prev := l.logged
	show := decreased || math.Floor(rate) != math.Floor(prev) || (rate >= l.cfg.Rate && prev < l.cfg.Rate)
	if show {
		l.logged = rate
	}
	l.mu.Unlock()
	if !show {
		return
	}
	if decreased {
		l.cfg.Logger.WarnContext(ctx, "quota: rate limited by the API; lowering the shared rate",
			"account", l.account, "rate", round(rate), "ceiling", l.cfg.Rate)
		return
	}
	l.cfg.Logger.InfoContext(ctx, "quota: raising the shared rate", "account", l.account, "rate", round(rate), "ceiling", l.cfg.Rate)
}

func round(f float64) float64 { return math.Round(f*1000) / 1000 }

// State reads the shared quota.
func (l *Limiter) State(ctx context.Context) (State, error) {
	m, err := l.rdb.HGetAll(ctx, l.stateKey).Result()
	if err != nil {
		return State{}, fmt.Errorf("quota: read state: %w", err)
	}
	st := State{Account: l.account, Ceiling: l.cfg.Rate, Effective: l.cfg.Rate, Burst: l.cfg.Burst, Adaptive: l.cfg.Adaptive}
	if v, err := strconv.ParseFloat(m["rate"], 64); err == nil && l.cfg.Adaptive {
		st.Effective = round(min(max(v, l.cfg.MinRate), l.cfg.Rate))
	}
	if ms, err := strconv.ParseInt(m["last_decrease"], 10, 64); err == nil && ms > 0 {
		st.LastDecrease = time.UnixMilli(ms).UTC()
	}
	st.Decreases, _ = strconv.ParseInt(m["decreases"], 10, 64)
	return st, nil
}

// Rates are the shared quota's effective and ceiling rates (its metrics).
func (l *Limiter) Rates(ctx context.Context) (effective, ceiling float64, err error) {
	st, err := l.State(ctx)
	return st.Effective, st.Ceiling, err
}

// FleetRate reads the fleet's effective API call rate: the shared
// limiter's (adapted to rate-limit answers) when shared, otherwise the
// configured ceiling, cfg.Rate.
func FleetRate(rdb redis.UniversalClient, cfg Config, shared bool) func(context.Context) (float64, error) {
	if !shared {
		return func(context.Context) (float64, error) { return cfg.Rate, nil }
	}
	limiter := New(rdb, cfg)
	return func(ctx context.Context) (float64, error) {
		st, err := limiter.State(ctx)
		return st.Effective, err
	}
}

// Reset forgets the adapted rate and the limiter's history (tests, and an
// operator after raising the account's quota with the vendor).
func (l *Limiter) Reset(ctx context.Context) error {
	return l.rdb.Del(ctx, l.stateKey, "rate:"+l.gcraKey).Err()
}

// Rates are returned as strings: Lua numbers become integers in replies.
var decreaseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ceiling = tonumber(ARGV[1])
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate') or ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[1], 'last_decrease') or '0')
if now - last < tonumber(ARGV[4]) then
  return {tostring(rate), 0}
end
local new = math.max(tonumber(ARGV[2]), math.min(rate, ceiling) * tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'rate', tostring(new), 'last_decrease', tostring(now))
redis.call('HINCRBY', KEYS[1], 'decreases', 1)
return {tostring(new), 1}
`)

var increaseScript = redis.NewScript(`
local ceiling = tonumber(ARGV[1])
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate') or ARGV[1])
if rate >= ceiling then
  return {tostring(ceiling), 0}
end
local new = math.min(ceiling, rate + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'rate', tostring(new))
return {tostring(new), 1}
`)
