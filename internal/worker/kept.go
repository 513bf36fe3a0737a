package worker

import (
	"sync"
	"time"

	"github.com/cropq/cropq/status"
)

// keptAnswers are paid answers whose checkpoint Redis refused, held until
// their URL expires or they are recorded; bounded, so that a long outage
// costs at most maxKept answers of memory (a few hundred bytes each).
type keptAnswers struct {
	mu sync.Mutex
	m  map[string]keptAnswer
}

type keptAnswer struct {
	cp    status.Checkpoint
	usage int
	until time.Time // this worker's clock
}

const maxKept = 10_000

// put keeps k for id; false when full.
func (k *keptAnswers) put(id string, a keptAnswer) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.m[id]; !ok && len(k.m) >= maxKept {
		return false
	}
	k.m[id] = a
	return true
}

// take removes and returns id's answer if it is still alive at now.
func (k *keptAnswers) take(id string, now time.Time) (keptAnswer, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	a, ok := k.m[id]
	delete(k.m, id)
	return a, ok && now.Before(a.until)
}

// snapshot drops the expired answers and returns a copy of the others.
func (k *keptAnswers) snapshot(now time.Time) map[string]keptAnswer {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]keptAnswer, len(k.m))
	for id, a := range k.m {
		if !now.Before(a.until) {
			delete(k.m, id)
			continue
		}
		out[id] = a
	}
	return out
}

// drop removes id's answer if it is still a.
func (k *keptAnswers) drop(id string, a keptAnswer) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur, ok := k.m[id]; ok && cur.cp == a.cp {
		delete(k.m, id)
	}
}
