package quota

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/rediskey"
)

// The account's calls are counted in Redis, fleet-wide, so that every pod
// (and the web UI) reads the same figures: one hash per UTC day with the
// day's totals ("c" calls, "l" rate-limited answers) and the same per
// minute ("c:HHMM", "l:HHMM"), kept two days. A call is a token taken from
// the limiter; a rate-limited answer is one Observe was told of (501/429).

const (
	usageCalls   = "c"
	usageLimited = "l"
)

// Usage is the account's calls in the last hour and today (UTC).
type Usage struct {
	CallsLastHour   int64 `json:"callsLastHour"`
	CallsToday      int64 `json:"callsToday"`
	LimitedLastHour int64 `json:"rateLimitedLastHour"`
	LimitedToday    int64 `json:"rateLimitedToday"`
}

// LimitedShare is the share of the last hour's calls answered rate-limited
// (0 without calls).
func (u Usage) LimitedShare() float64 {
	if u.CallsLastHour == 0 {
		return 0
	}
	return float64(u.LimitedLastHour) / float64(u.CallsLastHour)
}

func (l *Limiter) usageKey(t time.Time) string {
	return rediskey.Prefix(l.cfg.Prefix).QuotaUsage(l.account, t)
}

// count adds one to kind's counters now; a failure is logged, not returned:
// the call itself was allowed.
func (l *Limiter) count(ctx context.Context, kind string) {
	now := time.Now().UTC()
	k := l.usageKey(now)
	pipe := l.rdb.Pipeline()
	pipe.HIncrBy(ctx, k, kind, 1)
	pipe.HIncrBy(ctx, k, kind+":"+now.Format("1504"), 1)
	pipe.Expire(ctx, k, 48*time.Hour)
	if _, err := pipe.Exec(ctx); err != nil {
		l.cfg.Logger.WarnContext(ctx, "quota: count usage", "err", err)
	}
}

// Usage reads the account's calls: the last hour is the last 60 minutes,
// this one included.
func (l *Limiter) Usage(ctx context.Context) (Usage, error) {
	now := time.Now().UTC()
	byDay := map[string][]string{}
	var days []string
	for i := range 60 {
		t := now.Add(-time.Duration(i) * time.Minute)
		k := l.usageKey(t)
		if byDay[k] == nil {
			days = append(days, k)
		}
		m := t.Format("1504")
		byDay[k] = append(byDay[k], usageCalls+":"+m, usageLimited+":"+m)
	}
	pipe := l.rdb.Pipeline()
	today := pipe.HMGet(ctx, l.usageKey(now), usageCalls, usageLimited)
	hours := make([]*redis.SliceCmd, len(days))
	for i, k := range days {
		hours[i] = pipe.HMGet(ctx, k, byDay[k]...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return Usage{}, fmt.Errorf("quota: read usage: %w", err)
	}
	num := func(v any) int64 {
		s, _ := v.(string)
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	var u Usage
	u.CallsToday, u.LimitedToday = num(today.Val()[0]), num(today.Val()[1])
	for _, h := range hours {
		for j, v := range h.Val() {
			if j%2 == 0 {
				u.CallsLastHour += num(v)
			} else {
				u.LimitedLastHour += num(v)
			}
		}
	}
	return u, nil
}
