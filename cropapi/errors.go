package cropapi

import (
	"errors"
	"fmt"
	"time"
)

// Business result codes (resCode) published for the cropping API and its
// sibling image APIs.
const (
	CodeSuccess          = 200
	CodeSystemError      = 500
	CodeRateLimited      = 501
	CodeInvalidInput     = 700
	CodeModelFailed      = 801
	CodeInternalURLError = 900
	CodeSensitiveContent = 1000
	CodeContentControl   = 1001
	CodeRiskFilter       = 1002
)

// Class is what a caller should do about an error.
type Class int

const (
	// ClassNone is a nil error.
	ClassNone Class = iota
	// ClassRateLimited: the account's quota is spent for now. Retry after the
	// limit frees up; it is not a failure of the task.
	ClassRateLimited
	// ClassRetryable: a transient fault. Retry with backoff; it counts as a
	// failed attempt.
	ClassRetryable
	// ClassPermanent: the same request will fail again. Do not retry.
	ClassPermanent
	// ClassUnknown: the error did not come from this package (a cancelled
	// context, say); the caller decides.
	ClassUnknown
)

func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassRateLimited:
		return "rate_limited"
	case ClassRetryable:
		return "retryable"
	case ClassPermanent:
		return "permanent"
	default:
		return "unknown"
	}
}

// classified is implemented by every error type of this package.
type classified interface {
	error
	Class() Class
	// Code is a short, stable identifier for status records and metrics
	// ("700", "IncompleteSignature", "http_429", "validation").
	Code() string
}

// ClassOf classifies err (which may wrap one of this package's errors).
func ClassOf(err error) Class {
	if err == nil {
		return ClassNone
	}
	var c classified
	if errors.As(err, &c) {
		return c.Class()
	}
	return ClassUnknown
}

// CodeOf returns the stable code of the first error of this package in err's
// chain, or "" when there is none.
func CodeOf(err error) string {
	var c classified
	if errors.As(err, &c) {
		return c.Code()
	}
	return ""
}

// IsRateLimited reports whether err means the account's quota is spent
// (resCode 501 or HTTP 429 or a gateway call-limit code).
func IsRateLimited(err error) bool { return ClassOf(err) == ClassRateLimited }

// RetryAfterOf returns the server's Retry-After hint carried by err, if any.
func RetryAfterOf(err error) (time.Duration, bool) {
	var te *TransportError
	if errors.As(err, &te) && te.RetryAfter > 0 {
		return te.RetryAfter, true
	}
	return 0, false
}

// ValidationError reports input the API would refuse. Nothing was sent.
type ValidationError struct {
	Field  string // the request field, as named on the wire ("targetWidth")
	Reason string // what is wrong, naming the limit
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}
func (e *ValidationError) Class() Class { return ClassPermanent }
func (e *ValidationError) Code() string { return "validation" }

// TransportError is a call that got no usable answer: a network failure, an
// HTTP status other than 2xx, or a body that is not the API's JSON.
type TransportError struct {
	Op         string        // what was being done ("send", "read body", "decode body")
	StatusCode int           // HTTP status, 0 when none was received
	RetryAfter time.Duration // from a Retry-After header, 0 when absent
	Body       string        // the start of the body, for diagnosis (never holds secrets we sent)
	Err        error
}

func (e *TransportError) Error() string {
	msg := "cropapi " + e.Op
	if e.StatusCode != 0 {
		msg += fmt.Sprintf(": HTTP %d", e.StatusCode)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Body != "" {
		msg += fmt.Sprintf(" (body: %q)", e.Body)
	}
	return msg
}
func (e *TransportError) Unwrap() error { return e.Err }

func (e *TransportError) Class() Class {
	switch {
	case e.StatusCode == 429:
		return ClassRateLimited
	case e.StatusCode >= 400 && e.StatusCode < 500 && e.StatusCode != 408:
		// The request itself is wrong (or the account is): the same call will
		// be refused again.
		return ClassPermanent
	default:
		return ClassRetryable
	}
}

func (e *TransportError) Code() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("http_%d", e.StatusCode)
	}
	return "transport"
}

// Gateway error types (the "type" field).
const (
	GatewayTypeISV    = "ISV"    // the caller's fault
	GatewayTypeISP    = "ISP"    // the provider's fault
	GatewayTypeSystem = "SYSTEM" // the platform's fault
)

// gatewayRateLimitCodes are gateway codes that mean a call limit was hit.
// The vendor does not publish the full list; these are the platform's
// flow-control codes.
var gatewayRateLimitCodes = map[string]bool{
	"ApiCallLimit":  true,
	"AppCallLimit":  true,
	"UserCallLimit": true,
	"FlowControl":   true,
}

// GatewayError is a refusal by the API gateway: a top-level "code" other than
// "0" (bad signature, unknown app key, call limits).
type GatewayError struct {
	GatewayCode string // "IncompleteSignature", …
	Type        string // ISV, ISP or SYSTEM
	Message     string
	RequestID   string
}

func (e *GatewayError) Error() string {
	return fmt.Sprintf("cropapi gateway error %s (%s): %s [request_id %s]", e.GatewayCode, e.Type, e.Message, e.RequestID)
}

func (e *GatewayError) Class() Class {
	switch {
	case gatewayRateLimitCodes[e.GatewayCode]:
		return ClassRateLimited
	case e.Type == GatewayTypeISP || e.Type == GatewayTypeSystem:
		return ClassRetryable
	default:
		return ClassPermanent
	}
}
func (e *GatewayError) Code() string { return e.GatewayCode }

// APIError is a business-layer failure: success=false or resCode ≠ 200.
type APIError struct {
	ResCode   int
	Message   string // resMessage; for 700 it names the field
	RequestID string // the API's requestId
	TraceID   string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("cropapi resCode %d: %s [requestId %s]", e.ResCode, e.Message, e.RequestID)
}

// Class follows the protocol page's table. An unknown code is treated as
// transient: failed calls are not billed, and MaxRetry bounds the cost.
func (e *APIError) Class() Class {
	switch e.ResCode {
	case CodeRateLimited:
		return ClassRateLimited
	case CodeInvalidInput, CodeSensitiveContent, CodeRiskFilter:
		return ClassPermanent
	default:
		return ClassRetryable
	}
}
func (e *APIError) Code() string { return fmt.Sprint(e.ResCode) }
