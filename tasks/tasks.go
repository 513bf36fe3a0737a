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
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cropq/cropq/cropapi"
)

// TypeCrop is the asynq task type of a crop.
const TypeCrop = "cropq:crop"

// PayloadVersion is the version of CropPayload this code writes. Workers
// refuse versions they do not know rather than guess.
const PayloadVersion = 1

// DefaultQueue is the queue crops go to unless told otherwise.
const DefaultQueue = "crops"

// CropPayload is what a crop task carries.
type CropPayload struct {
	Version   int    `json:"v"`
	RequestID string `json:"requestId"`
	// The image, by URL or base64: exactly one (Validate refuses both).
	ImageURL     string `json:"imageUrl,omitempty"`
	ImageBase64  string `json:"imageBase64,omitempty"`
	TargetWidth  int    `json:"targetWidth"`
	TargetHeight int    `json:"targetHeight"`
	// Destination; empty means the worker's configured bucket and template.
	Bucket      string `json:"bucket,omitempty"`
	KeyTemplate string `json:"keyTemplate,omitempty"`
	// Metadata is stored with the object (S3 user metadata).
	Metadata map[string]string `json:"metadata,omitempty"`
	BatchID  string            `json:"batchId,omitempty"`
	// Input replaces ImageBase64 when the producer stored a large image in
	// S3 (a claim check), so that Redis holds a reference, not the image.
	Input *InputRef `json:"input,omitempty"`
	// CallbackURL, when set, is POSTed the request's terminal state.
	CallbackURL string `json:"callbackUrl,omitempty"`
	// EnqueuedAt is set by NewCropTask, for end-to-end latency.
	EnqueuedAt time.Time `json:"enqueuedAt,omitzero"`
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
func (p CropPayload) CropRequest() cropapi.Request {
	return cropapi.Request{ImageURL: p.ImageURL, ImageBase64: p.ImageBase64, TargetWidth: p.TargetWidth, TargetHeight: p.TargetHeight}
}

// Source names the image source the API will use.
func (p CropPayload) Source() string {
	if p.ImageBase64 != "" || p.Input != nil {
		return "base64"
	}
	return "url"
}

// Limits of the fields that are ours rather than the API's.
const (
	MaxRequestIDLen   = 128
	MaxMetadataPairs  = 16
	MaxMetadataKeyLen = 64
	MaxMetadataValLen = 256
	MaxKeyTemplateLen = 512
	MaxBucketLen      = 63
	MaxCallbackURLLen = 2048
	MaxInputKeyLen    = 1024
)

var (
	requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)
	metadataKey      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	bucketPattern    = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

// ValidateRequestID checks a request id: 1–128 characters of letters,
// digits and . _ : - (starting with a letter or digit, no ".."), so that it is
// safe in Redis keys, S3 keys, logs and URLs.
func ValidateRequestID(id string) error {
	switch {
	case id == "":
		return &cropapi.ValidationError{Field: "requestId", Reason: "is required"}
	case len(id) > MaxRequestIDLen:
		return &cropapi.ValidationError{Field: "requestId", Reason: fmt.Sprintf("must be at most %d characters, got %d", MaxRequestIDLen, len(id))}
	case !requestIDPattern.MatchString(id) || strings.Contains(id, ".."):
		return &cropapi.ValidationError{Field: "requestId", Reason: "must start with a letter or digit and contain only letters, digits and . _ : - (no \"..\")"}
	}
	return nil
}

// Validate checks the payload against limits (the API's rules) and this
// package's own. It returns a *cropapi.ValidationError naming the field.
func (p CropPayload) Validate(limits cropapi.Limits) error {
	if p.Version != PayloadVersion {
		return &cropapi.ValidationError{Field: "v", Reason: fmt.Sprintf("payload version %d is not supported (want %d)", p.Version, PayloadVersion)}
	}
	if err := ValidateRequestID(p.RequestID); err != nil {
		return err
	}
	// The API takes both sources and silently prefers base64; a producer
	// that sends both has made a mistake we would only bury, so every
	// entrance (library, HTTP, CLI) asks for exactly one.
	if p.ImageURL != "" && p.ImageBase64 != "" {
		return &cropapi.ValidationError{Field: "imageUrl", Reason: "must not be set together with imageBase64: give exactly one image source"}
	}
	if p.Input != nil {
		if err := p.validateInput(limits); err != nil {
			return err
		}
	} else if err := limits.Validate(p.CropRequest()); err != nil {
		return err
	}
	if p.CallbackURL != "" {
		if err := ValidateCallbackURL(p.CallbackURL); err != nil {
			return err
		}
	}
	if p.Bucket != "" && !bucketPattern.MatchString(p.Bucket) {
		return &cropapi.ValidationError{Field: "bucket", Reason: "must be a valid S3 bucket name (3–63 lower-case letters, digits, . and -)"}
	}
	if len(p.KeyTemplate) > MaxKeyTemplateLen {
		return &cropapi.ValidationError{Field: "keyTemplate", Reason: fmt.Sprintf("must be at most %d characters, got %d", MaxKeyTemplateLen, len(p.KeyTemplate))}
	}
	if p.BatchID != "" {
		if err := ValidateRequestID(p.BatchID); err != nil {
			var ve *cropapi.ValidationError
			errors.As(err, &ve)
			return &cropapi.ValidationError{Field: "batchId", Reason: ve.Reason}
		}
	}
	if len(p.Metadata) > MaxMetadataPairs {
		return &cropapi.ValidationError{Field: "metadata", Reason: fmt.Sprintf("must have at most %d entries, got %d", MaxMetadataPairs, len(p.Metadata))}
	}
	for k, v := range p.Metadata {
		if len(k) > MaxMetadataKeyLen || !metadataKey.MatchString(k) {
			return &cropapi.ValidationError{Field: "metadata", Reason: fmt.Sprintf("key %.70q must be 1–%d lower-case letters, digits and -", k, MaxMetadataKeyLen)}
		}
		if len(v) > MaxMetadataValLen || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return &cropapi.ValidationError{Field: "metadata", Reason: fmt.Sprintf("value of %q must be at most %d printable characters", k, MaxMetadataValLen)}
		}
	}
	return nil
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

// ValidateCallbackURL checks a callback URL's form: absolute http(s), a
// host, no credentials, at most MaxCallbackURLLen bytes. Where it may point
// is checked when it is called (no private addresses unless allowed).
func ValidateCallbackURL(raw string) error {
	if len(raw) > MaxCallbackURLLen {
		return &cropapi.ValidationError{Field: "callbackUrl", Reason: fmt.Sprintf("must be at most %d bytes, got %d", MaxCallbackURLLen, len(raw))}
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return &cropapi.ValidationError{Field: "callbackUrl", Reason: "must be an absolute http or https URL"}
	case u.User != nil:
		return &cropapi.ValidationError{Field: "callbackUrl", Reason: "must not carry credentials"}
	}
	return nil
}

// Options are the asynq options of a crop task. Zero values take defaults.
type Options struct {
	Queue     string        // default DefaultQueue
	MaxRetry  int           // default 10; retries that are not failures (rate limits) do not count
	Timeout   time.Duration // one attempt, default 5m
	Retention time.Duration // keep completed tasks (and so refuse the same id) this long, default 24h
	ProcessAt time.Time
	// Limits are the API's input rules (zero → cropapi.DefaultLimits()).
	Limits cropapi.Limits
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
	if err := p.Validate(o.Limits); err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, nil, fmt.Errorf("tasks: encode payload: %w", err)
	}
	if o.Queue == "" {
		o.Queue = DefaultQueue
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = 10
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Retention <= 0 {
		o.Retention = 24 * time.Hour
	}
	opts := []asynq.Option{
		asynq.TaskID(p.RequestID),
		asynq.Queue(o.Queue),
		asynq.MaxRetry(o.MaxRetry),
		asynq.Timeout(o.Timeout),
		asynq.Retention(o.Retention),
	}
	if !o.ProcessAt.IsZero() {
		opts = append(opts, asynq.ProcessAt(o.ProcessAt))
	}
	return asynq.NewTask(TypeCrop, b), opts, nil
}

// ParseCropPayload decodes a task payload strictly: unknown fields, trailing
// data and unknown versions are errors.
func ParseCropPayload(b []byte) (CropPayload, error) {
	var p CropPayload
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return CropPayload{}, fmt.Errorf("tasks: decode crop payload: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return CropPayload{}, errors.New("tasks: decode crop payload: trailing data")
	}
	if p.Version != PayloadVersion {
		return CropPayload{}, fmt.Errorf("tasks: crop payload version %d is not supported (want %d)", p.Version, PayloadVersion)
	}
	return p, nil
}
