package workertest

import (
	"context"
	"errors"
	"sync"

	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/worker"
)

// Leases keeps crop leases in memory (worker.Leases). Nothing expires on
// its own: Take plays the fleet's rescuer taking a lease away, and Renew
// the holder's renewal that finds it gone.
type Leases struct {
	// Err, when set, refuses every Acquire (Redis away).
	Err error

	mu       sync.Mutex
	held     map[*Lease]bool
	acquired []lease.Holder
}

// NewLeases returns leases with none held.
func NewLeases() *Leases { return &Leases{held: map[*Lease]bool{}} }

// Lease is one held lease (worker.Lease).
type Lease struct {
	l      *Leases
	holder lease.Holder
	cancel context.CancelCauseFunc
	lost   bool
}

// Acquire takes h's lease; the context returned is canceled with cause
// lease.ErrLost when Take takes it away.
func (l *Leases) Acquire(ctx context.Context, h lease.Holder) (context.Context, worker.Lease, error) {
	if l.Err != nil {
		return ctx, nil, l.Err
	}
	if err := ctx.Err(); err != nil {
		return ctx, nil, err
	}
	lctx, cancel := context.WithCancelCause(ctx)
	ls := &Lease{l: l, holder: h, cancel: cancel}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held[ls] = true
	l.acquired = append(l.acquired, h)
	return lctx, ls, nil
}

// Take takes away the leases held for taskID, as the rescuer does with
// expired ones: Held says false from now on, and the next Renew cancels
// their attempts' contexts. It returns how many it took.
func (l *Leases) Take(taskID string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for ls := range l.held {
		if ls.holder.TaskID == taskID && !ls.lost {
			ls.lost = true
			n++
		}
	}
	return n
}

// Renew is the holder's renewal (lease.Leases.RenewAll): the attempts whose
// lease was taken have their contexts canceled with cause lease.ErrLost.
// It returns how many were lost.
func (l *Leases) Renew() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for ls := range l.held {
		if ls.lost {
			delete(l.held, ls)
			ls.cancel(lease.ErrLost)
			n++
		}
	}
	return n
}

// Held is how many leases are held now (taken ones included until Renew
// or Release: the holder does not know yet).
func (l *Leases) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held)
}

// Acquired lists the holders of every Acquire, in order.
func (l *Leases) Acquired() []lease.Holder {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]lease.Holder(nil), l.acquired...)
}

// Held reports whether the lease is still this attempt's.
func (ls *Lease) Held(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil && !errors.Is(context.Cause(ctx), lease.ErrLost) {
		return false, err
	}
	ls.l.mu.Lock()
	defer ls.l.mu.Unlock()
	return !ls.lost, nil
}

// Release gives the lease up.
func (ls *Lease) Release(context.Context) error {
	ls.l.mu.Lock()
	defer ls.l.mu.Unlock()
	delete(ls.l.held, ls)
	ls.cancel(context.Canceled)
	return nil
}
