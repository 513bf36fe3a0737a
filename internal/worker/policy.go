package worker

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/namespace"
	"github.com/cropq/cropq/internal/objectkey"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
)

// Decision is what the retry policy does with an error.
type Decision struct {
	Class           string        // stable name of the row of the policy table
	Retry           bool          // hand the task back for another attempt
	CountsAsFailure bool          // spends one of MaxRetry and counts in failed stats
	Delay           time.Duration // a server's hint (Retry-After); 0 = use the backoff
}

// Decide is the retry policy, one row per error class:
//
//	class         examples                          retry  failure  delay
//	rate_limited  resCode 501, HTTP 429, no quota    yes    no       Retry-After or the limiter's, else RateLimitDelay
//	              token within the wait bound
//	budget        the tenant's budget is spent for   yes    no       until the next period, at most Cap (then looked
//	              the period (CROPQ_TENANT_BUDGETS)                  at again: nothing was paid)
//	permanent     700, 1000, 1002, validation, 4xx,  no     yes      —
//	              a key template that cannot render,
//	              a result URL off the allow-list,
//	              a request's own bucket missing
//	              or not its tenant's, a key that
//	              holds another request's object
//	              (checked before paying)
//	api           500, 801, 900, 1001, transport     yes    yes      backoff: 2s doubling, cap 5m
//	storage       S3 upload, result download         yes    yes      backoff: 1s doubling, cap 1m (checkpoint kept: no new paid call)
//	coalescing    a twin (same crop key) is paying   yes    no       CoalesceDelay (nothing was paid; the task
//	              for the same crop (reuse.go)                       waited CoalesceWait in place first)
//	storage_      bucket unreachable before paying   yes    no       StorageDeferDelay (nothing was paid; the task
//	unavailable   (storageGate)                                      waited StorageMaxWait in place first)
//	status        Redis errors writing the record    yes    yes      backoff: 500ms doubling, cap 30s
//	interrupted   worker shutting down               yes    no       backoff (api)
//	unknown       anything else                      yes    yes      backoff (api)
//
// Backoff is exponential with full jitter: a uniform draw in (0, min(cap,
// base·2^retries)].
//
// "failure" decides whether the attempt spends MaxRetry. On the last
// attempt every class ends in status failed (asynq archives a task whose
// retries are spent on any error, whatever IsFailure says), except a
// shutdown: asynq puts those tasks back itself.
func Decide(err error) Decision {
	d, _ := Classify(err)
	return d
}

// StorageDeferDelay is how long a task handed back by the storage gate waits
// before its next attempt.
const StorageDeferDelay = 5 * time.Second

// rateLimited is an error from the shared quota (quota.DeferError): no token
// within the wait bound, try again after RateLimitedFor.
type rateLimited interface {
	error
	RateLimitedFor() time.Duration
}

// Classify is the one ladder of error types an attempt's error is sorted
// by: it returns the policy row (Decide) and the code the status record
// keeps — the API's own code for an answer of the API (cropapi.CodeOf),
// else one of the worker's Codes.
func Classify(err error) (Decision, string) {
	var (
		deferred rateLimited
		spent    *budget.ExhaustedError
		twin     *CoalescingError
		source   *results.SourceError
		wall     *namespace.Error
	)
	api := cropapi.CodeOf(err)
	code := func(c Code) string { return cmp.Or(api, string(c)) }
	switch class := cropapi.ClassOf(err); {
	case errors.As(err, &spent):
		return Decision{Class: "budget", Retry: true, Delay: spent.WaitFor()}, code(CodeBudget)
	case errors.As(err, &deferred):
		return Decision{Class: "rate_limited", Retry: true, Delay: deferred.RateLimitedFor()}, code(CodeQuota)
	case errors.As(err, &twin):
		return Decision{Class: "coalescing", Retry: true, Delay: twin.RetryIn}, code(CodeCoalescing)
	case errors.As(err, new(*StorageUnavailableError)):
		return Decision{Class: "storage_unavailable", Retry: true, Delay: StorageDeferDelay}, code(CodeStorageUnavailable)
	case errors.As(err, new(*StatusUnavailableError)):
		return Decision{Class: "status_unavailable", Retry: true, Delay: StorageDeferDelay}, code(CodeStatusUnavailable)
	case class == cropapi.ClassRateLimited:
		d, _ := cropapi.RetryAfterOf(err)
		return Decision{Class: "rate_limited", Retry: true, Delay: d}, api
	case class == cropapi.ClassPermanent:
		return Decision{Class: "permanent", CountsAsFailure: true}, api
	case class == cropapi.ClassRetryable:
		return Decision{Class: "api", Retry: true, CountsAsFailure: true}, api
	case errors.As(err, new(*objectkey.Error)):
		return Decision{Class: "permanent", CountsAsFailure: true}, code(CodeKeyTemplate)
	case errors.As(err, new(*results.BucketError)):
		return Decision{Class: "permanent", CountsAsFailure: true}, code(CodeBucket)
	case errors.As(err, new(*results.KeyTakenError)):
		return Decision{Class: "permanent", CountsAsFailure: true}, code(CodeKeyTaken)
	case errors.As(err, &wall) && wall.Field == "bucket":
		return Decision{Class: "permanent", CountsAsFailure: true}, code(CodeBucket)
	case errors.As(err, &wall):
		return Decision{Class: "permanent", CountsAsFailure: true}, code(CodeKeyTemplate)
	case errors.As(err, new(*results.HostError)):
		return Decision{Class: "permanent", CountsAsFailure: true}, code(CodeResultHost)
	case errors.As(err, new(*storage.InputError)):
		return Decision{Class: "storage", Retry: true, CountsAsFailure: true}, code(CodeInput)
	case errors.As(err, &source) && source.Expired:
		return Decision{Class: "storage", Retry: true, CountsAsFailure: true}, code(CodeResultExpired)
	case errors.As(err, &source):
		return Decision{Class: "storage", Retry: true, CountsAsFailure: true}, code(CodeResultDownload)
	case errors.As(err, new(*results.UploadError)):
		return Decision{Class: "storage", Retry: true, CountsAsFailure: true}, code(CodeStorageUpload)
	case errors.Is(err, status.ErrConflict), errors.Is(err, status.ErrNotFound):
		return Decision{Class: "status", Retry: true, CountsAsFailure: true}, code(contextCode(err, CodeInternal))
	case errors.Is(err, lease.ErrLost):
		// Another task runs the crop now; this one's retry finds the request
		// owned and stops quietly (or, if no rescue took it, runs it).
		return Decision{Class: "lease", Retry: true, Delay: time.Second}, code(CodeLeaseLost)
	case errors.Is(err, context.Canceled):
		return Decision{Class: "interrupted", Retry: true}, code(CodeInterrupted)
	default:
		return Decision{Class: "unknown", Retry: true, CountsAsFailure: true}, code(contextCode(err, CodeInternal))
	}
}

// contextCode names an error that ended with its context (a deadline, a
// shutdown), else is otherwise.
func contextCode(err error, otherwise Code) Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	case errors.Is(err, context.Canceled):
		return CodeInterrupted
	}
	return otherwise
}

// notFailureError marks an attempt that should be retried without spending
// MaxRetry (asynq's IsFailure), after delay when one is known.
type notFailureError struct {
	err   error
	delay time.Duration
}

func (e *notFailureError) Error() string { return e.err.Error() }
func (e *notFailureError) Unwrap() error { return e.err }

// IsFailure is asynq's Config.IsFailure: rate limits and interruptions do not
// count as failed attempts.
func IsFailure(err error) bool {
	var nf *notFailureError
	return !errors.As(err, &nf)
}

// Defaults of Backoff.
const (
	DefaultRetryBase = 2 * time.Second
	DefaultRetryCap  = 5 * time.Minute
)

// Backoff is the delay policy for retries: exponential with full jitter,
// capped per class, and a server's or the limiter's delay honoured.
type Backoff struct {
	Base           time.Duration // first retry's upper bound for api errors (default 2s)
	Cap            time.Duration // their largest delay (default 5m)
	RateLimitDelay time.Duration // a rate limit without a hint (default 1s)
	// Classes overrides Base and Cap for a Decision.Class (defaults:
	// storage 1s…1m, status 500ms…30s, both at most Cap).
	Classes map[string]Curve
}

// Curve is one class's exponential backoff.
type Curve struct {
	Base, Cap time.Duration
}

// curve returns the backoff of class.
func (b Backoff) curve(class string) Curve {
	if c, ok := b.Classes[class]; ok && c.Base > 0 && c.Cap > 0 {
		return c
	}
	switch class {
	case "storage":
		return Curve{min(time.Second, b.Base), min(time.Minute, b.Cap)}
	case "status":
		return Curve{min(500*time.Millisecond, b.Base), min(30*time.Second, b.Cap)}
	}
	return Curve{b.Base, b.Cap}
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = DefaultRetryBase
	}
	if b.Cap <= 0 {
		b.Cap = DefaultRetryCap
	}
	if b.RateLimitDelay <= 0 {
		b.RateLimitDelay = time.Second
	}
	return b
}

// Delay is asynq's RetryDelayFunc; n is the number of retries so far.
func (b Backoff) Delay(n int, err error, _ *asynq.Task) time.Duration {
	b = b.withDefaults()
	var nf *notFailureError
	if errors.As(err, &nf) {
		if nf.delay > 0 {
			return min(nf.delay, b.Cap)
		}
		if cropapi.IsRateLimited(err) {
			return b.RateLimitDelay
		}
	}
	c := b.curve(Decide(err).Class)
	upper := c.Base
	for i := 0; i < n && upper < c.Cap; i++ {
		upper *= 2
	}
	upper = min(upper, c.Cap)
	return time.Duration(rand.Int64N(int64(upper)) + 1)
}
