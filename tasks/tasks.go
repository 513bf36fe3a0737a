// Package tasks is the contract between producers and workers: the crop
// task's type name, its versioned JSON payload, the payload's validation
// (the same rules as the API, so a paid call is never spent on input the API
// refuses) and NewCropTask, which sets the asynq options.
//
// A producer needs only this package and asynq:
//
//	task, opts, err := tasks.NewCropTask(payload, tasks.Options{})
//	if err != nil { /* a *cropapi.ValidationError naming the field and the limit */ }
//	info, err := client.Enqueue(task, opts...)
//	if errors.Is(err, asynq.ErrTaskIDConflict) { /* already known: not paid twice */ }
package tasks

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/strictjson"
)

// TypeCrop is the asynq task type of a crop.
const TypeCrop = "cropq:crop"

// PayloadVersion is the version of CropPayload this code writes. Workers
// refuse versions they do not know rather than guess.
const PayloadVersion = 1

// DefaultQueue is the queue crops go to unless told otherwise.
const DefaultQueue = "crops"

// CropPayload is what a crop task carries: the request, and what the
// producer adds to it.
type CropPayload struct {
	Version int `json:"v"`
	Request
	// Input replaces ImageBase64 when the producer stored a large image in
	// S3 (a claim check), so that Redis holds a reference, not the image.
	Input *InputRef `json:"input,omitempty"`
	// EnqueuedAt is set by NewCropTask, for end-to-end latency.
	EnqueuedAt time.Time `json:"enqueuedAt,omitzero"`
	// Rescue is set on the task that runs a crop again after the worker
	// running it stopped renewing its lease (package lease).
	Rescue *Rescue `json:"rescue,omitempty"`
	// Traceparent is the W3C trace context of the request's creation (the
	// producer's "publish crops" span), when tracing is on: the worker's
	// spans join that trace. 55 bytes; absent when tracing is off.
	Traceparent string `json:"traceparent,omitempty"`
}

// Rescue names the task and attempt a rescue task replaces. Its attempts
// are numbered on from Attempt, so the status record's ordering holds.
type Rescue struct {
	From    string `json:"from"`
	Attempt int    `json:"attempt"`
}

// RescueTaskID is the asynq task id of the rescue of requestID's attempt:
// unique per attempt, so rescuing the same attempt twice is harmless.
func RescueTaskID(requestID string, attempt int) string {
	return requestID + "~rescue-" + strconv.Itoa(attempt)
}

// InputRef is where a claim-checked image is: the worker reads it, sends it
// as imageBase64, and deletes it once the crop is stored.
type InputRef struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// CropRequest is the API call this payload asks for.
func (p CropPayload) CropRequest() cropapi.Request { return p.cropRequest() }

// Source names the image source the API will use.
func (p CropPayload) Source() string {
	if p.ImageBase64 != "" || p.Input != nil {
		return "base64"
	}
	return "url"
}

var (
	requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)
	metadataKey      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	bucketPattern    = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

// Validate checks the payload as the worker does before paying: the
// request's rules (Request.Validate; a claim-checked image was validated
// when it was stored) and the payload's own.
func (p CropPayload) Validate(rules Rules) error {
	if p.Version != PayloadVersion {
		return &cropapi.ValidationError{Field: "v", Reason: fmt.Sprintf("payload version %d is not supported (want %d)", p.Version, PayloadVersion)}
	}
	if p.Input == nil {
		return p.Request.Validate(rules)
	}
	if err := ValidateRequestID(p.RequestID); err != nil {
		return err
	}
	if err := p.validateInput(rules.Limits); err != nil {
		return err
	}
	return p.validateRest(rules)
}

// validateInput checks a claim check; its image was validated when stored.
func (p CropPayload) validateInput(limits cropapi.Limits) error {
	in := p.Input
	switch {
	case p.ImageBase64 != "" || p.ImageURL != "":
		return &cropapi.ValidationError{Field: "input", Reason: "replaces imageBase64 and imageUrl: set only one source"}
	case !bucketPattern.MatchString(in.Bucket):
		return &cropapi.ValidationError{Field: "input.bucket", Reason: "must be a valid S3 bucket name"}
	case in.Key == "" || len(in.Key) > MaxInputKeyLen:
		return &cropapi.ValidationError{Field: "input.key", Reason: fmt.Sprintf("must be 1–%d bytes", MaxInputKeyLen)}
	case in.Size <= 0:
		return &cropapi.ValidationError{Field: "input.size", Reason: "must be positive"}
	}
	return limits.ValidateTargets(p.TargetWidth, p.TargetHeight)
}

// Defaults of Options (and of the CROPQ_ variables that set them).
const (
	DefaultMaxRetry  = 10
	DefaultTimeout   = 5 * time.Minute
	DefaultRetention = 24 * time.Hour
)

// Options are the asynq options of a crop task. Zero values take defaults.
type Options struct {
	Queue     string        // default DefaultQueue
	MaxRetry  int           // default 10; retries that are not failures (rate limits) do not count
	Timeout   time.Duration // one attempt, default 5m
	Retention time.Duration // keep completed tasks (and so refuse the same id) this long, default 24h
	ProcessAt time.Time
	// Limits are the API's input rules (zero → cropapi.DefaultLimits()).
	Limits cropapi.Limits
	// CallbackAllow: see Rules.CallbackAllow.
	CallbackAllow []netip.Prefix
	// Destinations: see Rules.Destinations.
	Destinations Destinations
}

// Rules are the validation rules of o.
func (o Options) Rules() Rules {
	return Rules{Limits: o.Limits, CallbackAllow: o.CallbackAllow, Destinations: o.Destinations}
}

// NewCropTask validates p and returns the task and its options. The task id
// is the request id, so a second enqueue of the same id is refused by asynq
// with asynq.ErrTaskIDConflict while the first is known (including its
// retention after completion): the API is never paid twice for one id.
func NewCropTask(p CropPayload, o Options) (*asynq.Task, []asynq.Option, error) {
	if p.Version == 0 {
		p.Version = PayloadVersion
	}
	if p.EnqueuedAt.IsZero() {
		p.EnqueuedAt = time.Now().UTC()
	}
	if err := p.Validate(o.Rules()); err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, nil, fmt.Errorf("tasks: encode payload: %w", err)
	}
	return asynq.NewTask(TypeCrop, b), TaskOptionsFor(p, o), nil
}

// TaskOptionsFor are TaskOptions for payload p. A payload that carries its
// image inline is not kept once completed: asynq would keep the whole image
// in Redis for the retention (115 KB for one task hash, 49 MB after 400
// such requests, measured), while the status record already holds what
// anyone needs of a finished request, and repeated ids are refused by the
// record, not by the completed task.
func TaskOptionsFor(p CropPayload, o Options) []asynq.Option {
	opts := TaskOptions(p.RequestID, o)
	if p.ImageBase64 != "" {
		opts = append(opts, asynq.Retention(0)) // the last Retention option wins
	}
	return opts
}

// TaskOptions are the asynq options of the crop task of requestID (for a
// payload validated when it was accepted, such as a backlog entry).
func TaskOptions(requestID string, o Options) []asynq.Option {
	if o.Queue == "" {
		o.Queue = DefaultQueue
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = DefaultMaxRetry
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	opts := []asynq.Option{
		asynq.TaskID(requestID),
		asynq.Queue(o.Queue),
		asynq.MaxRetry(o.MaxRetry),
		asynq.Timeout(o.Timeout),
		asynq.Retention(o.Retention),
	}
	if !o.ProcessAt.IsZero() {
		opts = append(opts, asynq.ProcessAt(o.ProcessAt))
	}
	return opts
}

// ParseCropPayload decodes a task payload with the entrances' strict
// decoder (internal/strictjson): unknown or repeated fields, names in
// another case, trailing data, invalid UTF-8 and unknown versions are
// errors. Payloads already queued by earlier versions decode unchanged:
// they were written by encoding/json, which writes none of those, and the
// request's fields kept their names when they moved into Request.
func ParseCropPayload(b []byte) (CropPayload, error) {
	var p CropPayload
	if err := strictjson.Unmarshal(b, &p); err != nil {
		return CropPayload{}, fmt.Errorf("tasks: decode crop payload: %w", err)
	}
	if p.Version != PayloadVersion {
		return CropPayload{}, fmt.Errorf("tasks: crop payload version %d is not supported (want %d)", p.Version, PayloadVersion)
	}
	return p, nil
}
