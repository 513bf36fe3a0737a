// Package budget caps the paid API calls of each tenant per period (an
// hour, a day or a month, UTC), fleet-wide, through Redis.
//
// A call is reserved before it is made, by a script that counts it only
// while the period's count is under the cap: any number of workers racing
// at the cap never exceed it. A reservation whose call was not made, or
// was answered with a failure the vendor does not bill, is given back
// (Reservation.Refund); a call whose outcome is unknown (a timeout after
// the request left) keeps it, since the vendor may have billed it.
//
// The count lives under a key of its own per tenant and period, apart from
// the cap: changing CROPQ_TENANT_BUDGETS keeps the current period's count.
package budget

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
)

// Period is how often a budget starts again.
type Period string

// The periods, in UTC.
const (
	Hour  Period = "hour"
	Day   Period = "day"
	Month Period = "month"
)

// Cap is a tenant's budget: at most Limit paid calls per Period.
type Cap struct {
	Limit  int64
	Period Period
}

func (c Cap) String() string { return strconv.FormatInt(c.Limit, 10) + "/" + string(c.Period) }

// bounds are the beginning of the period holding t and of the next one.
func (p Period) bounds(t time.Time) (from, to time.Time) {
	t = t.UTC()
	switch p {
	case Hour:
		from = t.Truncate(time.Hour)
		return from, from.Add(time.Hour)
	case Month:
		from = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return from, from.AddDate(0, 1, 0)
	default:
		from = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return from, from.AddDate(0, 0, 1)
	}
}

// stamp names the period holding t in its key.
func (p Period) stamp(t time.Time) string {
	from, _ := p.bounds(t)
	switch p {
	case Hour:
		return "h" + from.Format("2006010215")
	case Month:
		return "m" + from.Format("200601")
	default:
		return "d" + from.Format("20060102")
	}
}

// ParseCap reads CROPQ_TENANT_BUDGETS's entries, "TENANT=LIMIT/PERIOD",
// one per tenant (the caller splits the list and the pairs).
func ParseCap(s string) (Cap, error) {
	n, p, ok := strings.Cut(s, "/")
	limit, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
	if !ok || err != nil || limit < 0 {
		return Cap{}, fmt.Errorf("budget %q: want LIMIT/PERIOD, LIMIT a whole number of calls ≥ 0 and PERIOD hour, day or month", s)
	}
	switch per := Period(strings.TrimSpace(p)); per {
	case Hour, Day, Month:
		return Cap{Limit: limit, Period: per}, nil
	default:
		return Cap{}, fmt.Errorf("budget %q: period %q is not hour, day or month", s, p)
	}
}

// Config configures Budgets.
type Config struct {
	// Prefix of the keys (default "cropq:"): counts at
	// Prefix+"budget:{TENANT}:STAMP".
	Prefix string
	// Caps are the tenants' budgets; a tenant without one has no cap.
	Caps map[string]Cap
	// Now is the clock of the periods (default time.Now).
	Now func() time.Time
}

// Budgets counts and caps tenants' paid calls. Safe for concurrent use.
type Budgets struct {
	rdb redis.UniversalClient
	cfg Config
}

// New returns the budgets of cfg on rdb, which the caller owns.
func New(rdb redis.UniversalClient, cfg Config) *Budgets {
	if cfg.Prefix == "" {
		cfg.Prefix = status.DefaultPrefix
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Budgets{rdb: rdb, cfg: cfg}
}

// Capped reports whether any tenant has a budget.
func (b *Budgets) Capped() bool { return b != nil && len(b.cfg.Caps) > 0 }

// Cap is tenant's budget, if it has one.
func (b *Budgets) Cap(tenant string) (Cap, bool) {
	if b == nil {
		return Cap{}, false
	}
	c, ok := b.cfg.Caps[tenantName(tenant)]
	return c, ok
}

func tenantName(t string) string {
	if t == "" {
		return "default"
	}
	return t
}

func (b *Budgets) key(tenant string, c Cap, t time.Time) string {
	return rediskey.Prefix(b.cfg.Prefix).Budget(tenantName(tenant), c.Period.stamp(t))
}

// ExhaustedError is a call not made: its tenant spent its budget for the
// period, which ends at Until.
type ExhaustedError struct {
	Tenant string
	Cap    Cap
	Until  time.Time
	// Now is when it was found, on the budget's clock.
	Now time.Time
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("budget: tenant %s spent its %s budget; calls resume at %s", e.Tenant, e.Cap, e.Until.Format(time.RFC3339))
}

// WaitFor is how long until the next period opens.
func (e *ExhaustedError) WaitFor() time.Duration { return max(e.Until.Sub(e.Now), time.Second) }

// Reservation is one paid call counted against a budget.
type Reservation struct {
	b   *Budgets
	key string
}

// Refund gives back the call of a reservation that was not billed (not
// made, or answered with a failure). Refunding a zero Reservation (no
// cap) does nothing.
func (r Reservation) Refund(ctx context.Context) error {
	if r.b == nil {
		return nil
	}
	if err := refundScript.Run(ctx, r.b.rdb, []string{r.key}).Err(); err != nil {
		return fmt.Errorf("budget: refund: %w", err)
	}
	return nil
}

// reserveScript counts one call in KEYS[1] if it holds fewer than ARGV[1],
// keeping it ARGV[2] ms; the new count, or -1 when the budget is spent.
var reserveScript = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return -1 end
n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
`)

var refundScript = redis.NewScript(`
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return redis.call('DECR', KEYS[1]) end
return 0
`)

// Reserve counts one paid call of tenant against its budget, or returns an
// *ExhaustedError when the period's budget is spent. A tenant without a
// budget gets a zero Reservation.
func (b *Budgets) Reserve(ctx context.Context, tenant string) (Reservation, error) {
	c, ok := b.Cap(tenant)
	if !ok {
		return Reservation{}, nil
	}
	now := b.cfg.Now()
	_, until := c.Period.bounds(now)
	key := b.key(tenant, c, now)
	// Kept a day past its period, for `cropq status --budget` and the page.
	keep := until.Sub(now) + 24*time.Hour
	n, err := reserveScript.Run(ctx, b.rdb, []string{key}, c.Limit, keep.Milliseconds()).Int64()
	if err != nil {
		return Reservation{}, fmt.Errorf("budget: reserve for %s: %w", tenantName(tenant), err)
	}
	if n < 0 {
		return Reservation{}, &ExhaustedError{Tenant: tenantName(tenant), Cap: c, Until: until, Now: now}
	}
	return Reservation{b: b, key: key}, nil
}

// Usage is a tenant's budget and what it spent of it this period.
type Usage struct {
	Tenant string    `json:"tenant"`
	Used   int64     `json:"used"`
	Cap    int64     `json:"cap"`
	Period Period    `json:"period"`
	Ends   time.Time `json:"ends"` // when the next period opens
}

// Ratio is Used ÷ Cap (1 for a cap of 0).
func (u Usage) Ratio() float64 {
	if u.Cap <= 0 {
		return 1
	}
	return float64(u.Used) / float64(u.Cap)
}

// Exhausted reports whether nothing is left this period.
func (u Usage) Exhausted() bool { return u.Used >= u.Cap }

// Usages returns every budgeted tenant's usage, by tenant name.
func (b *Budgets) Usages(ctx context.Context) ([]Usage, error) {
	if !b.Capped() {
		return nil, nil
	}
	tenants := make([]string, 0, len(b.cfg.Caps))
	for t := range b.cfg.Caps {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	return b.usages(ctx, tenants)
}

func (b *Budgets) usages(ctx context.Context, tenants []string) ([]Usage, error) {
	now := b.cfg.Now()
	pipe := b.rdb.Pipeline()
	var out []Usage
	var cmds []*redis.StringCmd
	for _, t := range tenants {
		c, ok := b.Cap(t)
		if !ok {
			continue
		}
		_, until := c.Period.bounds(now)
		out = append(out, Usage{Tenant: tenantName(t), Cap: c.Limit, Period: c.Period, Ends: until})
		cmds = append(cmds, pipe.Get(ctx, b.key(t, c, now)))
	}
	if len(out) == 0 {
		return nil, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("budget: usage: %w", err)
	}
	for i, c := range cmds {
		out[i].Used, _ = c.Int64()
	}
	return out, nil
}

// Left returns, among tenants, those with a budget and the calls left to
// them this period.
func (b *Budgets) Left(ctx context.Context, tenants []string) (map[string]int64, error) {
	if !b.Capped() {
		return nil, nil
	}
	us, err := b.usages(ctx, tenants)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(us))
	for _, u := range us {
		out[u.Tenant] = max(u.Cap-u.Used, 0)
	}
	return out, nil
}

// Check returns an *ExhaustedError when tenant's budget is spent for the
// period: a look, not a reservation (see Reserve).
func (b *Budgets) Check(ctx context.Context, tenant string) error {
	c, ok := b.Cap(tenant)
	if !ok {
		return nil
	}
	now := b.cfg.Now()
	n, err := b.rdb.Get(ctx, b.key(tenant, c, now)).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("budget: check %s: %w", tenantName(tenant), err)
	}
	if n >= c.Limit {
		_, until := c.Period.bounds(now)
		return &ExhaustedError{Tenant: tenantName(tenant), Cap: c, Until: until, Now: now}
	}
	return nil
}

// Until returns when the last of calls more paid calls of tenant can be
// made under its budget: zero when they fit in what is left this period,
// else the start of the period that has room for the last of them; ok
// false when they never can (a budget of 0). exhausted reports whether
// nothing is left this period.
func (b *Budgets) Until(ctx context.Context, tenant string, calls int64) (at time.Time, exhausted, ok bool, err error) {
	c, capped := b.Cap(tenant)
	if !capped {
		return time.Time{}, false, true, nil
	}
	us, err := b.usages(ctx, []string{tenant})
	if err != nil || len(us) == 0 {
		return time.Time{}, false, true, err
	}
	u := us[0]
	left := max(u.Cap-u.Used, 0)
	exhausted = left == 0
	if calls <= left {
		return time.Time{}, exhausted, true, nil
	}
	if c.Limit == 0 {
		return time.Time{}, true, false, nil
	}
	periods := (calls - left + c.Limit - 1) / c.Limit // beyond this one
	at = u.Ends
	for range periods - 1 {
		_, at = c.Period.bounds(at)
	}
	return at, exhausted, true, nil
}
