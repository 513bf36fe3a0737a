package workertest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
)

// Inputs is an in-memory store of claim-checked images (worker.Inputs).
type Inputs struct {
	mu      sync.Mutex
	objects map[string][]byte // by bucket + "/" + key
	deleted int
}

// NewInputs returns an empty input store.
func NewInputs() *Inputs { return &Inputs{objects: map[string][]byte{}} }

// Put stores an image and returns the reference a payload carries.
func (in *Inputs) Put(bucket, key string, data []byte) *tasks.InputRef {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.objects[bucket+"/"+key] = append([]byte(nil), data...)
	return &tasks.InputRef{Bucket: bucket, Key: key, Size: int64(len(data))}
}

// Get reads an image; a *storage.InputError when it is not there.
func (in *Inputs) Get(ctx context.Context, ref storage.Input) ([]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	b, ok := in.objects[ref.Bucket+"/"+ref.Key]
	if !ok {
		return nil, &storage.InputError{Bucket: ref.Bucket, Key: ref.Key, Err: fmt.Errorf("NoSuchKey")}
	}
	return append([]byte(nil), b...), ctx.Err()
}

// Delete removes an image (absent is fine, as in S3).
func (in *Inputs) Delete(ctx context.Context, ref storage.Input) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.objects, ref.Bucket+"/"+ref.Key)
	in.deleted++
	return nil
}

// Has reports whether an image is stored.
func (in *Inputs) Has(bucket, key string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	_, ok := in.objects[bucket+"/"+key]
	return ok
}

// Deleted is how many deletes were asked.
func (in *Inputs) Deleted() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.deleted
}

// Notification is one callback handed to the Notifier.
type Notification struct {
	URL    string
	Record status.Record
}

// Notifier records callbacks instead of sending them (worker.Notifier).
type Notifier struct {
	mu   sync.Mutex
	sent []Notification
}

// Notify records one callback.
func (n *Notifier) Notify(_ context.Context, callbackURL string, rec status.Record) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, Notification{URL: callbackURL, Record: rec})
	return nil
}

// Sent returns the callbacks, in order.
func (n *Notifier) Sent() []Notification {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Notification(nil), n.sent...)
}

// Quota is the fleet's shared API quota, in memory (worker.Quota): every
// Wait gets a token unless Deny says otherwise.
type Quota struct {
	// Deny, when set, is asked on wait n (1-based); its error refuses the
	// token (see Deferred).
	Deny func(n int) error

	mu          sync.Mutex
	waits       int
	ok, limited int
}

// Deferred is the quota's refusal when no token comes within its wait
// bound (quota.DeferError): worker.Decide classifies it as rate limited.
type Deferred struct{ For time.Duration }

func (e *Deferred) Error() string {
	return fmt.Sprintf("quota: no token within the wait bound; try again in %s", e.For)
}

// RateLimitedFor is when to try again.
func (e *Deferred) RateLimitedFor() time.Duration { return e.For }

// Wait takes a token.
func (q *Quota) Wait(ctx context.Context) error {
	q.mu.Lock()
	q.waits++
	n, deny := q.waits, q.Deny
	q.mu.Unlock()
	if deny != nil {
		if err := deny(n); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Observe counts a call's outcome.
func (q *Quota) Observe(_ context.Context, rateLimited bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if rateLimited {
		q.limited++
	} else {
		q.ok++
	}
}

// Waits is how many tokens were asked for.
func (q *Quota) Waits() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waits
}

// Observed is how many calls were reported as succeeded and as rate
// limited.
func (q *Quota) Observed() (ok, rateLimited int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ok, q.limited
}
