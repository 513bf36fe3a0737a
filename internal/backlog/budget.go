package backlog

import (
	"maps"
	"time"
)

// The urgent budget: lanes are strict, so without it any tenant could send
// everything urgent and take the whole quota ahead of every other tenant's
// normal work. Each tenant has an allowance in the first lane (urgent): a
// token bucket refilled at
//
//	UrgentShare × rate × weight ÷ mean weight of the tenants with work
//
// in the first two lanes (scale-free like the weights themselves: with
// equal weights it is UrgentShare of the rate per tenant), holding up to
// Lead's worth (at least one), so an urgent wave that size goes straight
// through. While two or more tenants have work in the first two lanes, a
// tenant's urgent entries beyond its allowance are fed in the second lane
// (normal) as its own normal work, ahead of its normal entries, and what
// it took in the urgent lane counts against its weighted share of the
// normal lane. So a tenant's urgent and normal calls together get no more
// than its weighted share while others have normal work (urgent buys
// latency, not quota), and a flood of urgent requests leaves another
// tenant of equal weight half of the calls: at most twice its time alone.
// A tenant alone in those lanes is never demoted (it delays nobody), and
// nothing is ever left unfed for the budget's sake: demoted work is fed as
// soon as the normal lane gets calls.
//
// The buckets live in the leader's memory. A new leader (a takeover) sees
// every tenant's bucket full: a flooding tenant gets at most one more burst
// (UrgentShare × rate × Lead calls) per takeover, the same as a tenant idle
// for Lead, in exchange for never demoting a fresh fleet's first urgent
// wave.

// buckets are the tenants' urgent allowances. A tenant without a bucket
// has a full one.
type buckets struct {
	tokens map[string]float64
	at     time.Time // last refill
}

func newBuckets() *buckets { return &buckets{tokens: map[string]float64{}} }

// budget refills the buckets to now and returns the allowance of each
// tenant with work in the first lane (nil when the budget is off or the
// rate unknown), and whether work beyond it is demoted this tick.
func (f *Feeder) budget(lanes []string, byLane map[string][]string, rate float64, now time.Time) (map[string]int, bool) {
	if f.cfg.UrgentShare >= 1 || len(lanes) < 2 || rate <= 0 {
		return nil, false
	}
	contenders := map[string]bool{}
	for _, l := range lanes[:2] {
		for _, t := range byLane[l] {
			contenders[t] = true
		}
	}
	mean := 1.0
	if len(contenders) > 0 {
		sum := 0
		for t := range contenders {
			sum += f.Weight(t)
		}
		mean = float64(sum) / float64(len(contenders))
	}
	b := f.urgent
	dt := 0.0
	if !b.at.IsZero() {
		dt = max(now.Sub(b.at).Seconds(), 0)
	}
	b.at = now
	urgent := map[string]bool{}
	for _, t := range byLane[lanes[0]] {
		urgent[t] = true
	}
	known := maps.Clone(urgent)
	for t := range b.tokens {
		known[t] = true
	}
	allowance := map[string]int{}
	for t := range known {
		r := f.cfg.UrgentShare * rate * float64(f.Weight(t)) / mean
		burst := max(r*f.cfg.Lead.Seconds(), 1)
		tok, ok := b.tokens[t]
		if ok {
			tok = min(tok+r*dt, burst)
		} else {
			tok = burst
		}
		if !urgent[t] && tok >= burst {
			delete(b.tokens, t) // full: the same as no bucket
			continue
		}
		b.tokens[t] = tok
		if urgent[t] {
			allowance[t] = int(tok + 1e-9)
		}
	}
	return allowance, len(contenders) >= 2
}

// spend takes what each tenant was fed in the urgent lane from its bucket
// (a tenant alone, never demoted, empties it but runs no debt).
func (b *buckets) spend(got map[string]int) {
	for t, n := range got {
		if tok, ok := b.tokens[t]; ok {
			b.tokens[t] = max(tok-float64(n), 0)
		}
	}
}
