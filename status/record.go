// Package status is what cropq records of every crop request id, and how a
// pipeline reads it: the Record (state, attempts, the paid API answer while
// it is being copied, where the result was stored, a bounded history), the
// states it moves through, and the errors a read or a cancel returns.
//
// A pipeline gets records through package producer (Producer.Get, Batch,
// Cancel), and hears of every terminal state on the Redis stream at
// Config.EventsKey, with a consumer group of its own. Records are written
// only by cropq: the states move as follows, and never out of a terminal
// one (Succeeded, Failed, Canceled):
//
//	queued   → running, failed, canceled
//	running  → running (a new attempt), cropped, retrying, succeeded, failed
//	retrying → running, retrying, failed
//	cropped  → running, cropped, retrying, succeeded, failed
package status

import (
	"errors"
	"fmt"
	"time"

	"github.com/cropq/cropq/tasks"
)

// State is where a request is in its life.
type State string

const (
	Queued    State = "queued"    // accepted and enqueued
	Running   State = "running"   // a worker holds it
	Retrying  State = "retrying"  // an attempt failed; another will come
	Cropped   State = "cropped"   // the API answered; the result URL is checkpointed
	Succeeded State = "succeeded" // the result is in S3
	Failed    State = "failed"    // given up; ErrorCode says why
	Canceled  State = "canceled"  // canceled before it started
)

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool { return s == Succeeded || s == Failed || s == Canceled }

// Record is the status of one request id.
type Record struct {
	RequestID string    `json:"requestId"`
	State     State     `json:"state"`
	Attempt   int       `json:"attempt"` // 1-based; 0 while queued
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"` // stored only once it differs from CreatedAt

	// What was asked, so a repeated id can be told apart from a new request
	// and the request rebuilt from its record: the request's parameters
	// (Tenant and Priority with their defaults filled in, as they place the
	// request in the backlog's lanes and shares), and what stands for its
	// image.
	tasks.Params
	Source       string `json:"source,omitempty"` // "url" or "base64"
	SourceURL    string `json:"sourceUrl,omitempty"`
	SourceDigest string `json:"sourceDigest,omitempty"` // sha256 of a base64 image's bytes
	// ServedAs is the lane the request was fed to the workers in when it
	// is not its Priority: "normal" for an urgent request beyond its
	// tenant's urgent share of the quota (CROPQ_URGENT_SHARE). Empty when
	// served in its own lane, or not fed yet.
	ServedAs string `json:"servedAs,omitempty"`
	// Fingerprint covers every parameter of the request (tasks.Request's
	// Fingerprint): the same id with any other parameter is a conflict.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Line is the request's 1-based line in its batch's manifest (package
	// manifest); 0 for a request that was not read from one.
	Line int64 `json:"line,omitempty"`
	// BatchSeq is the record's 1-based place in its batch's index
	// (batchindex.go); 0 when it is in none.
	BatchSeq int64 `json:"batchSeq,omitempty"`

	// Replays counts the times the request failed and was sent again
	// (POST /v1/replays); each starts a new attempt series from 1.
	Replays int `json:"replays,omitempty"`
	// Reason is why a queued request does not move when it is not its
	// turn: "budget" while its tenant's budget of paid calls is spent
	// (CROPQ_TENANT_BUDGETS). Said when the record is read, never stored.
	Reason string `json:"reason,omitempty"`

	ErrorCode    string `json:"errorCode,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`

	// Checkpoint of the paid API call: reused by later attempts until it expires.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// PaidCalls and Usage add up every successful API call for this id.
	PaidCalls int `json:"paidCalls"`
	Usage     int `json:"usage"`
	// ExpiredRecrops counts paid calls made because an earlier result URL
	// expired before it could be copied (an S3 outage longer than its life).
	ExpiredRecrops int `json:"expiredRecrops,omitempty"`

	Stored *Stored `json:"stored,omitempty"`

	History []Transition `json:"history,omitempty"`

	// Task is the asynq task that owns the request once a rescue (package
	// lease) handed it to a task of its own; empty, the request's own task
	// owns it. Updates from any other task are refused as stale.
	Task string `json:"task,omitempty"`
	// ReusedFrom names the request whose stored result this one reused
	// (package dedup): copied, not paid for. When that request is another
	// tenant's (CROPQ_DEDUP_SCOPE=global), an opaque reference stands in
	// for it ("ref/" and 20 hex digits; `cropq status --resolve-ref`).
	ReusedFrom string `json:"reusedFrom,omitempty"`
	// Unchanged: the destination already held exactly this crop (the same
	// crop key and paid result, at the same bucket and key), so the request
	// succeeded without a copy or a write (a nightly re-sync).
	Unchanged bool `json:"unchanged,omitempty"`
	// Traceparent is the W3C trace context of the request's creation, set
	// when it is accepted with tracing on (package tracing): the feeder
	// copies it into the task it rebuilds from the record, so that the
	// worker's spans join the request's trace.
	Traceparent string `json:"traceparent,omitempty"`
}

// Checkpoint is a successful API answer whose result is not yet stored.
type Checkpoint struct {
	ResultURL string    `json:"resultUrl"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"` // on the vendor's clock
	// Lifetime is how long the URL lived from the answer, by the vendor's
	// clock (cropapi.Result.Lifetime).
	Lifetime     time.Duration `json:"lifetimeNs,omitempty"`
	Width        int           `json:"width"`
	Height       int           `json:"height"`
	APIRequestID string        `json:"apiRequestId,omitempty"`
	TraceID      string        `json:"traceId,omitempty"`
}

// Usable reports whether the checkpoint has a result URL to try. Whether
// it still lives is the vendor's to say: a worker's clock may be off by
// more than the URL's life, and a refused download is cheap where a paid
// call is not, so the download is tried and an expired answer (403) leads
// to a new crop.
func (c *Checkpoint) Usable() bool { return c != nil && c.ResultURL != "" }

// Stored is where the result landed.
type Stored struct {
	Bucket       string `json:"bucket"`
	Key          string `json:"key"`
	ETag         string `json:"etag,omitempty"`
	Size         int64  `json:"size"`
	ContentType  string `json:"contentType,omitempty"`
	Width        int    `json:"width,omitempty"`
	Height       int    `json:"height,omitempty"`
	APIRequestID string `json:"apiRequestId,omitempty"`
}

// Transition is one entry of a record's history.
type Transition struct {
	State     State     `json:"state"`
	At        time.Time `json:"at"`
	Attempt   int       `json:"attempt,omitempty"`
	ErrorCode string    `json:"errorCode,omitempty"`
	Message   string    `json:"message,omitempty"`
	// Replay, on the move back to queued of a failed request sent again
	// (a replay), numbers the attempt series it starts (1 for the first
	// replay); the attempts before it stay in the history.
	Replay int `json:"replay,omitempty"`
}

// Errors of a read or a cancel.
var (
	ErrNotFound = errors.New("status: no record for this request id")
	ErrConflict = errors.New("status: record changed concurrently too often")
)

// TransitionError is a move the state machine does not allow.
type TransitionError struct {
	RequestID string
	From, To  State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("status: request %s cannot move from %s to %s", e.RequestID, e.From, e.To)
}
