package backlog

import (
	"math"
	"slices"
	"time"
)

// Estimate is how long until n more requests of (lane, tenant) are done,
// given what waits now (stats), the tenants' weights and the fleet's rate
// in calls per second. It plays the feeder's rules forward as a fluid:
// higher lanes drain first at the full rate; within the lane every tenant
// with work drains at its weighted share, and a tenant that runs out hands
// its share to the others. The requests are taken to be behind everything
// their tenant already has waiting in the lane (the usual case for the
// newest batch); requests that arrive later are not foreseen. A zero or
// negative rate gives -1 (unknown).
func Estimate(stats []Stat, weights map[string]int, rate float64, lane, tenant string, n int64) time.Duration {
	if rate <= 0 {
		return -1
	}
	if n <= 0 {
		return 0
	}
	weight := func(t string) float64 {
		if w, ok := weights[t]; ok && w > 0 {
			return float64(w)
		}
		return 1
	}
	var ahead float64 // higher lanes
	left := map[string]float64{}
	for _, st := range stats {
		switch {
		case st.Lane == lane:
			left[st.Tenant] += float64(st.Len)
		case laneBefore(st.Lane, lane):
			ahead += float64(st.Len)
		}
	}
	// The tenant's own target: its whole waiting list, or n if more of the
	// batch is still to come (in flight or not yet counted).
	target := math.Max(left[tenant], float64(n))
	left[tenant] = target
	secs := ahead / rate
	for {
		var sum float64
		for t, l := range left {
			if l > 0 {
				sum += weight(t)
			}
		}
		// Time until the first tenant (maybe ours) runs out at these shares.
		step := math.Inf(1)
		for t, l := range left {
			if l > 0 {
				step = math.Min(step, l/(rate*weight(t)/sum))
			}
		}
		ours := left[tenant] / (rate * weight(tenant) / sum)
		if ours <= step {
			secs += ours
			return time.Duration(secs * float64(time.Second))
		}
		secs += step
		for t, l := range left {
			if l > 0 {
				left[t] = math.Max(0, l-step*rate*weight(t)/sum)
			}
		}
	}
}

// laneBefore reports whether lane a is served before lane b.
func laneBefore(a, b string) bool {
	ia, ib := slices.Index(DefaultLanes, a), slices.Index(DefaultLanes, b)
	return ia >= 0 && ib >= 0 && ia < ib
}
