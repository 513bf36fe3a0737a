package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cropq/cropq/storage"
)

// StorageUnavailableError says a crop was not paid for because the bucket
// it would be stored in is unreachable. It is handed back without spending
// MaxRetry: nothing was attempted, and a long S3 outage must neither lose
// requests nor turn into a bill for results that expire before they can be
// stored.
type StorageUnavailableError struct {
	Err error
}

func (e *StorageUnavailableError) Error() string {
	return fmt.Sprintf("storage unavailable, crop not paid for: %v", e.Err)
}
func (e *StorageUnavailableError) Unwrap() error { return e.Err }

// storageGate is this process's circuit breaker in front of paid calls.
// Closed, it costs nothing. A failed upload (or bucket check) opens it; while
// open, a crop is paid for only after a bucket check succeeds, and one check
// at a time, at most once per interval, speaks for every task.
type storageGate struct {
	check    func(context.Context) error
	interval time.Duration // between checks while open
	maxWait  time.Duration // a task waits in place this long before it is handed back
	now      func() time.Time

	mu        sync.Mutex
	open      bool
	checkedAt time.Time
	lastErr   error
}

func newStorageGate(check func(context.Context) error, interval, maxWait time.Duration, now func() time.Time) *storageGate {
	return &storageGate{check: check, interval: interval, maxWait: maxWait, now: now}
}

// allow returns nil when a crop may be paid for. While the gate is open it
// waits in place, up to maxWait, for a check to succeed (holding the task
// here keeps the rest of the queue pending instead of cycling it), then
// gives up with a *StorageUnavailableError. force checks the bucket even
// when the gate is closed (before paying again for a result that expired
// while it could not be stored).
func (g *storageGate) allow(ctx context.Context, force bool) error {
	deadline := g.now().Add(g.maxWait)
	for {
		if err := ctx.Err(); err != nil {
			return err // interrupted: says nothing of the bucket
		}
		next, err := g.try(ctx, force)
		if err == nil || ctx.Err() != nil || !next.Before(deadline) {
			return err
		}
		t := time.NewTimer(next.Sub(g.now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// try is one look at the gate: nil, or the error and when to look again.
func (g *storageGate) try(ctx context.Context, force bool) (time.Time, error) {
	g.mu.Lock()
	defer g.mu.Unlock() // held across the check: concurrent tasks wait for its verdict
	if !g.open && !force {
		return time.Time{}, nil
	}
	if g.open && g.now().Sub(g.checkedAt) < g.interval {
		return g.checkedAt.Add(g.interval), &StorageUnavailableError{Err: g.lastErr}
	}
	err := g.check(ctx)
	if err != nil && ctx.Err() != nil {
		return time.Time{}, ctx.Err() // this task was interrupted; says nothing of the bucket
	}
	g.checkedAt = g.now()
	g.open, g.lastErr = err != nil, err
	if err != nil {
		return g.checkedAt.Add(g.interval), &StorageUnavailableError{Err: err}
	}
	return time.Time{}, nil
}

// observe learns from a copy's outcome: an upload error opens the gate, a
// stored object closes it. Download errors and interruptions say nothing
// about the bucket.
func (g *storageGate) observe(ctx context.Context, err error) {
	var upload *storage.UploadError
	switch {
	case err == nil:
		g.mu.Lock()
		g.open = false
		g.mu.Unlock()
	case errors.As(err, &upload) && ctx.Err() == nil:
		g.mu.Lock()
		if !g.open {
			g.open, g.checkedAt, g.lastErr = true, g.now(), err
		}
		g.mu.Unlock()
	}
}
