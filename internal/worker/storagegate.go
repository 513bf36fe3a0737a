package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cropq/cropq/internal/results"
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

// storageGate is this process's circuit breaker in front of paid calls for
// results bound for the default bucket. Closed, it costs an atomic load. A
// failed upload (or bucket check) opens it; while open, a crop is paid for
// only after a bucket check succeeds, and one check at a time, at most once
// per interval, speaks for every task.
type storageGate struct {
	check    func(context.Context) error
	interval time.Duration // between checks while open
	maxWait  time.Duration // a task waits in place this long before it is handed back
	now      func() time.Time

	open atomic.Bool // read without the lock on the fast path

	mu        sync.Mutex // serialises checks; guards the fields below
	checkedAt time.Time  // last check, or the failed upload that opened the gate
	okAt      time.Time  // last successful check
	lastErr   error
}

func newStorageGate(check func(context.Context) error, interval, maxWait time.Duration, now func() time.Time) *storageGate {
	return &storageGate{check: check, interval: interval, maxWait: maxWait, now: now}
}

// allow returns nil when a crop may be paid for. While the gate is open it
// waits in place, up to maxWait, for a check to succeed (holding the task
// here keeps the rest of the queue pending instead of cycling it), then
// gives up with a *StorageUnavailableError. force checks the bucket even
// when the gate is closed, unless a check succeeded within the interval
// (before paying again for a result that expired while it could not be
// stored).
func (g *storageGate) allow(ctx context.Context, force bool) error {
	if !force && !g.open.Load() {
		return nil
	}
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
	g.mu.Lock() // a check in progress (bounded by its own timeout) speaks for this task too
	defer g.mu.Unlock()
	now := g.now()
	switch open := g.open.Load(); {
	case !open && !force:
		return time.Time{}, nil
	case !open && !g.okAt.IsZero() && now.Sub(g.okAt) < g.interval:
		return time.Time{}, nil // a forced check that was just made
	case open && now.Sub(g.checkedAt) < g.interval:
		return g.checkedAt.Add(g.interval), &StorageUnavailableError{Err: g.lastErr}
	}
	err := g.check(ctx)
	if err != nil && ctx.Err() != nil {
		return time.Time{}, ctx.Err() // this task was interrupted; says nothing of the bucket
	}
	g.checkedAt = g.now()
	if err != nil {
		g.lastErr = err
		g.open.Store(true)
		return g.checkedAt.Add(g.interval), &StorageUnavailableError{Err: err}
	}
	g.okAt = g.checkedAt
	g.open.Store(false)
	return time.Time{}, nil
}

// observe learns from a copy's outcome: an upload error opens the gate, a
// stored object closes it. Download errors and interruptions say nothing
// about the bucket.
func (g *storageGate) observe(ctx context.Context, err error) {
	var upload *results.UploadError
	switch {
	case err == nil:
		g.open.Store(false)
	case errors.As(err, &upload) && ctx.Err() == nil:
		// The failed upload is the gate's first check. If a check is in
		// progress its verdict stands instead; never wait for it here.
		if g.open.CompareAndSwap(false, true) && g.mu.TryLock() {
			g.checkedAt, g.lastErr = g.now(), err
			g.mu.Unlock()
		}
	}
}

// bucketChecks remembers which of the requests' own buckets were reachable
// lately, so that a request naming a missing bucket fails before it is paid
// for, at the cost of one HEAD per bucket a minute.
type bucketChecks struct {
	check func(ctx context.Context, bucket string) error
	now   func() time.Time
	mu    sync.Mutex
	ok    map[string]time.Time // bucket → when it was last reachable
}

// bucketCheckFor is how long a reachable bucket is trusted.
const bucketCheckFor = time.Minute

func (b *bucketChecks) allow(ctx context.Context, bucket string) error {
	b.mu.Lock()
	at, seen := b.ok[bucket]
	b.mu.Unlock()
	if seen && b.now().Sub(at) < bucketCheckFor {
		return nil
	}
	if err := b.check(ctx, bucket); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ok) > 10_000 {
		clear(b.ok) // bounded: a producer naming endless buckets costs HEADs, not memory
	}
	b.ok[bucket] = b.now()
	return nil
}
