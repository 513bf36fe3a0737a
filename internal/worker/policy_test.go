package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/lease"
	"github.com/cropq/cropq/internal/objectkey"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
)

func TestDecide(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("crop: %w", err) }
	tests := []struct {
		name string
		err  error
		want Decision
		code string
	}{
		{"501", wrap(&cropapi.APIError{ResCode: 501}), Decision{Class: "rate_limited", Retry: true}, "501"},
		{"429 with Retry-After", wrap(&cropapi.TransportError{StatusCode: 429, RetryAfter: 3 * time.Second}), Decision{Class: "rate_limited", Retry: true, Delay: 3 * time.Second}, "http_429"},
		{"gateway call limit", wrap(&cropapi.GatewayError{GatewayCode: "ApiCallLimit", Type: "ISV"}), Decision{Class: "rate_limited", Retry: true}, "ApiCallLimit"},
		{"500", wrap(&cropapi.APIError{ResCode: 500}), Decision{Class: "api", Retry: true, CountsAsFailure: true}, "500"},
		{"801", wrap(&cropapi.APIError{ResCode: 801}), Decision{Class: "api", Retry: true, CountsAsFailure: true}, "801"},
		{"900", wrap(&cropapi.APIError{ResCode: 900}), Decision{Class: "api", Retry: true, CountsAsFailure: true}, "900"},
		{"1001", wrap(&cropapi.APIError{ResCode: 1001}), Decision{Class: "api", Retry: true, CountsAsFailure: true}, "1001"},
		{"transport", wrap(&cropapi.TransportError{Op: "send", Err: errors.New("refused")}), Decision{Class: "api", Retry: true, CountsAsFailure: true}, "transport"},
		{"700", wrap(&cropapi.APIError{ResCode: 700}), Decision{Class: "permanent", CountsAsFailure: true}, "700"},
		{"1000", wrap(&cropapi.APIError{ResCode: 1000}), Decision{Class: "permanent", CountsAsFailure: true}, "1000"},
		{"1002", wrap(&cropapi.APIError{ResCode: 1002}), Decision{Class: "permanent", CountsAsFailure: true}, "1002"},
		{"validation", &cropapi.ValidationError{Field: "targetWidth", Reason: "x"}, Decision{Class: "permanent", CountsAsFailure: true}, "validation"},
		{"bad signature", wrap(&cropapi.GatewayError{GatewayCode: "IncompleteSignature", Type: "ISV"}), Decision{Class: "permanent", CountsAsFailure: true}, "IncompleteSignature"},
		{"key template", &objectkey.Error{Template: "/x"}, Decision{Class: "permanent", CountsAsFailure: true}, "key_template"},
		{"result off the allow-list", fmt.Errorf("copy result: %w", &results.HostError{URL: "http://evil", Reason: "x"}), Decision{Class: "permanent", CountsAsFailure: true}, "result_host"},
		{"upload", fmt.Errorf("copy result: %w", &results.UploadError{Op: "put", Err: errors.New("down")}), Decision{Class: "storage", Retry: true, CountsAsFailure: true}, "storage_upload"},
		{"expired source", fmt.Errorf("copy result: %w", &results.SourceError{Expired: true}), Decision{Class: "storage", Retry: true, CountsAsFailure: true}, "result_expired"},
		{"source", fmt.Errorf("copy result: %w", &results.SourceError{StatusCode: 500}), Decision{Class: "storage", Retry: true, CountsAsFailure: true}, "result_download"},
		{"status conflict", fmt.Errorf("mark running: %w", status.ErrConflict), Decision{Class: "status", Retry: true, CountsAsFailure: true}, "internal"},
		{"no quota token", fmt.Errorf("crop: %w", &quota.DeferError{RetryAfter: 4 * time.Second}), Decision{Class: "rate_limited", Retry: true, Delay: 4 * time.Second}, "quota"},
		{"a twin pays for the same crop", &CoalescingError{Holder: "sku-1", RetryIn: time.Second}, Decision{Class: "coalescing", Retry: true, Delay: time.Second}, "coalescing"},
		{"reusing a result, the upload fails", fmt.Errorf("reuse the result of sku-1: %w", &results.UploadError{Op: "copy", Err: errors.New("down")}), Decision{Class: "storage", Retry: true, CountsAsFailure: true}, "storage_upload"},
		{"shutdown", fmt.Errorf("crop: %w", context.Canceled), Decision{Class: "interrupted", Retry: true}, "interrupted"},
		{"timeout", fmt.Errorf("crop: %w", context.DeadlineExceeded), Decision{Class: "unknown", Retry: true, CountsAsFailure: true}, "timeout"},
		{"a status write timed out", fmt.Errorf("mark running: %w: %w", status.ErrConflict, context.DeadlineExceeded), Decision{Class: "status", Retry: true, CountsAsFailure: true}, "timeout"},
		{"lease lost", fmt.Errorf("%w: %w", lease.ErrLost, context.Canceled), Decision{Class: "lease", Retry: true, Delay: time.Second}, "lease_lost"},
		{"bucket unreachable", &StorageUnavailableError{Err: errors.New("down")}, Decision{Class: "storage_unavailable", Retry: true, Delay: StorageDeferDelay}, "storage_unavailable"},
		{"status refuses checkpoints", &StatusUnavailableError{}, Decision{Class: "status_unavailable", Retry: true, Delay: StorageDeferDelay}, "status_unavailable"},
		{"a request's own bucket missing", fmt.Errorf("crop: %w", &results.BucketError{Bucket: "b"}), Decision{Class: "permanent", CountsAsFailure: true}, "bucket"},
		{"claim-checked input unreadable", fmt.Errorf("crop: %w", &storage.InputError{Bucket: "in", Key: "k", Err: errors.New("gone")}), Decision{Class: "storage", Retry: true, CountsAsFailure: true}, "input"},
		{"anything else", errors.New("boom"), Decision{Class: "unknown", Retry: true, CountsAsFailure: true}, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Decide(tt.err))
			assert.Equal(t, tt.code, code(tt.err))
		})
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Cap: time.Second, RateLimitDelay: 250 * time.Millisecond}
	api := &cropapi.APIError{ResCode: 500}
	for n := 0; n < 10; n++ {
		upper := min(100*time.Millisecond<<n, time.Second)
		for i := 0; i < 200; i++ {
			d := b.Delay(n, api, nil)
			assert.True(t, d > 0 && d <= upper, "retry %d: %v not in (0, %v]", n, d, upper)
		}
	}
	// Not a failure: the server's hint, or the rate-limit delay.
	assert.Equal(t, 700*time.Millisecond, b.Delay(3, &notFailureError{err: api, delay: 700 * time.Millisecond}, nil))
	assert.Equal(t, time.Second, b.Delay(3, &notFailureError{err: api, delay: time.Hour}, nil), "capped")
	assert.Equal(t, 250*time.Millisecond, b.Delay(3, &notFailureError{err: &cropapi.APIError{ResCode: 501}}, nil))

	// Per-class curves: storage starts lower and caps lower than api.
	b = Backoff{Base: 2 * time.Second, Cap: 5 * time.Minute}
	upload := &results.UploadError{Op: "put", Err: errors.New("down")}
	for n := 0; n < 12; n++ {
		upper := min(time.Second<<n, time.Minute)
		for i := 0; i < 100; i++ {
			d := b.Delay(n, upload, nil)
			assert.True(t, d > 0 && d <= upper, "storage retry %d: %v not in (0, %v]", n, d, upper)
		}
	}
	b.Classes = map[string]Curve{"storage": {Base: 10 * time.Millisecond, Cap: 20 * time.Millisecond}}
	assert.LessOrEqual(t, b.Delay(5, upload, nil), 20*time.Millisecond, "configured curve")

	assert.False(t, IsFailure(&notFailureError{err: api}))
	assert.True(t, IsFailure(api))
}

// code is the status record's code of err (Classify's second half).
func code(err error) string {
	_, c := Classify(err)
	return c
}
