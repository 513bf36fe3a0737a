package workertest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cropq/cropq/cropapi"
)

// Cropper is an in-memory cropping API (worker.Cropper). Every call that
// Fail does not refuse is paid, and answers a result URL of its own
// (https://results.test/crop-N.png) at the requested size.
type Cropper struct {
	// Fail, when set, is asked first on call n (1-based); its error is the
	// call's answer, unpaid (see FailCalls). It may also act on the world
	// (cancel the attempt's context, take its lease) to stage what happens
	// during a call.
	Fail func(ctx context.Context, n int, req cropapi.Request) error
	// Lifetime of result URLs (default 5m).
	Lifetime time.Duration

	mu   sync.Mutex
	reqs []cropapi.Request
	paid int
}

// FailCalls answers call n with errs[n-1] (nil: paid as usual); calls past
// errs are paid.
func FailCalls(errs ...error) func(context.Context, int, cropapi.Request) error {
	return func(_ context.Context, n int, _ cropapi.Request) error {
		if n <= len(errs) {
			return errs[n-1]
		}
		return nil
	}
}

// Crop answers one call.
func (c *Cropper) Crop(ctx context.Context, req cropapi.Request) (cropapi.Result, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, req)
	n := len(c.reqs)
	fail := c.Fail
	c.mu.Unlock()
	if fail != nil {
		if err := fail(ctx, n, req); err != nil {
			return cropapi.Result{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		// What the real client answers when its request is cut off.
		return cropapi.Result{}, &cropapi.TransportError{Op: "send", Err: err}
	}
	life := c.Lifetime
	if life <= 0 {
		life = 5 * time.Minute
	}
	c.mu.Lock()
	c.paid++
	c.mu.Unlock()
	return cropapi.Result{
		ImageURL:  fmt.Sprintf("https://results.test/crop-%d.png", n),
		ExpiresAt: time.Now().Add(life),
		Lifetime:  life,
		Width:     req.TargetWidth,
		Height:    req.TargetHeight,
		Usage:     1,
		RequestID: fmt.Sprintf("api-%d", n),
	}, nil
}

// Calls is how many calls were made, paid or not.
func (c *Cropper) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.reqs)
}

// Paid is how many calls were paid for.
func (c *Cropper) Paid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paid
}

// Requests are the calls' requests, in order.
func (c *Cropper) Requests() []cropapi.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]cropapi.Request(nil), c.reqs...)
}
