package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/results"
)

// checker is a bucket check whose answer the test sets, counting calls.
type checker struct {
	calls atomic.Int32
	err   atomic.Pointer[error]
}

func (c *checker) check(context.Context) error {
	c.calls.Add(1)
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *checker) set(err error) { c.err.Store(&err) }

var errDown = errors.New("connection refused")

func uploadErr() error { return &results.UploadError{Op: "put", Bucket: "b", Key: "k", Err: errDown} }

func TestStorageGate(t *testing.T) {
	ctx := context.Background()
	newGate := func(c *checker, interval, maxWait time.Duration) *storageGate {
		return newStorageGate(c.check, interval, maxWait, time.Now)
	}

	t.Run("closed: no check, no wait", func(t *testing.T) {
		c := &checker{}
		c.set(errDown)
		g := newGate(c, time.Hour, time.Hour)
		require.NoError(t, g.allow(ctx, false))
		assert.Zero(t, c.calls.Load())
	})

	t.Run("force checks even when closed, and a failure opens the gate", func(t *testing.T) {
		c := &checker{}
		c.set(errDown)
		g := newGate(c, time.Hour, 0)
		err := g.allow(ctx, true)
		var su *StorageUnavailableError
		require.ErrorAs(t, err, &su)
		assert.ErrorIs(t, err, errDown)
		assert.Equal(t, int32(1), c.calls.Load())
		require.Error(t, g.allow(ctx, false), "open now")
		assert.Equal(t, int32(1), c.calls.Load(), "within the interval the last verdict stands")
	})

	t.Run("an upload error opens it; a stored copy closes it", func(t *testing.T) {
		c := &checker{}
		c.set(errDown)
		g := newGate(c, time.Hour, 0)
		g.observe(ctx, uploadErr())
		require.Error(t, g.allow(ctx, false))
		assert.Zero(t, c.calls.Load(), "the failed upload was the check")
		g.observe(ctx, nil)
		require.NoError(t, g.allow(ctx, false))
	})

	t.Run("download errors and interrupted uploads say nothing of the bucket", func(t *testing.T) {
		c := &checker{}
		g := newGate(c, time.Hour, 0)
		g.observe(ctx, &results.SourceError{URL: "https://x/y", Expired: true})
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		g.observe(cancelled, &results.UploadError{Op: "put", Err: context.Canceled})
		require.NoError(t, g.allow(ctx, false))
		assert.Zero(t, c.calls.Load())
	})

	t.Run("waits in place until a check succeeds", func(t *testing.T) {
		c := &checker{}
		c.set(errDown)
		g := newGate(c, 5*time.Millisecond, time.Minute)
		g.observe(ctx, uploadErr())
		done := make(chan error, 1)
		go func() { done <- g.allow(ctx, false) }()
		require.Eventually(t, func() bool { return c.calls.Load() >= 2 }, 10*time.Second, time.Millisecond, "checks while waiting")
		c.set(nil)
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("allow did not return after the bucket came back")
		}
	})

	t.Run("gives up after maxWait", func(t *testing.T) {
		c := &checker{}
		c.set(errDown)
		g := newGate(c, 5*time.Millisecond, 30*time.Millisecond)
		g.observe(ctx, uploadErr())
		start := time.Now()
		err := g.allow(ctx, false)
		require.ErrorAs(t, err, new(*StorageUnavailableError))
		assert.Less(t, time.Since(start), 5*time.Second)
		assert.Positive(t, c.calls.Load())
	})

	t.Run("a cancelled task stops waiting without judging the bucket", func(t *testing.T) {
		c := &checker{}
		c.set(errDown)
		g := newGate(c, time.Hour, time.Hour)
		g.observe(ctx, uploadErr())
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := g.allow(cctx, false)
		require.Error(t, err)
		assert.NotErrorAs(t, err, new(*StorageUnavailableError))
	})

	t.Run("one check per interval speaks for every waiting task", func(t *testing.T) {
		c := &checker{}
		c.set(errDown)
		g := newGate(c, time.Hour, 0)
		g.observe(ctx, uploadErr())
		g.mu.Lock()
		g.checkedAt = time.Now().Add(-2 * time.Hour) // due for a check
		g.mu.Unlock()
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() { assert.Error(t, g.allow(ctx, false)) })
		}
		wg.Wait()
		assert.Equal(t, int32(1), c.calls.Load())
	})
}

func TestStorageGateClosedNeverWaitsForACheck(t *testing.T) {
	ctx := context.Background()
	release := make(chan struct{})
	started := make(chan struct{})
	g := newStorageGate(func(context.Context) error {
		close(started)
		<-release // a slow HeadBucket
		return nil
	}, time.Hour, time.Hour, time.Now)
	forced := make(chan error, 1)
	go func() { forced <- g.allow(ctx, true) }()
	<-started
	require.NoError(t, g.allow(ctx, false), "closed: no wait for the forced check in progress")
	g.observe(ctx, nil) // a copy finishing does not wait either
	close(release)
	require.NoError(t, <-forced)
	require.NoError(t, g.allow(ctx, true), "a check that just succeeded satisfies a forced one")
}

func TestDecideStorageUnavailable(t *testing.T) {
	err := &StorageUnavailableError{Err: uploadErr()}
	d := Decide(err)
	assert.Equal(t, Decision{Class: "storage_unavailable", Retry: true, Delay: StorageDeferDelay}, d)
	assert.Equal(t, "storage_unavailable", code(err))
}
