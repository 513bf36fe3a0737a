// Package delivery sends the notifications of package webhook: a crop
// request's callbackUrl is POSTed an Event, signed (webhook.Sign), once the
// request reaches a terminal state.
//
// The worker enqueues with NewTask; a Deliverer handles TypeDeliver tasks.
// A delivery only ever goes to public addresses (Guard), checked on the
// address actually dialled so that DNS rebinding cannot bypass it:
//
//	task, opts, err := delivery.NewTask(callbackURL, ev, delivery.Options{})
//	if err != nil { /* a *FieldError naming callbackUrl */ }
//	_, err = client.Enqueue(task, opts...)
//	if errors.Is(err, asynq.ErrTaskIDConflict) { /* already notified */ }
package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/redact"
	"github.com/cropq/cropq/internal/strictjson"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/tasks"
	"github.com/cropq/cropq/webhook"
)

// TypeDeliver is the asynq task type of a webhook delivery.
const TypeDeliver = "cropq:webhook"

// DefaultQueue is the queue webhooks go to unless told otherwise; separate
// from crops so a slow receiver never delays paid work.
const DefaultQueue = "webhooks"

// PayloadVersion is the version of Payload this code writes and accepts.
const PayloadVersion = 1

// MaxURLBytes is the longest callback URL accepted.
const MaxURLBytes = tasks.MaxCallbackURLLen

// Defaults applied to zero fields of Options and Config.
const (
	DefaultMaxRetry         = 8
	DefaultTaskTimeout      = 30 * time.Second
	DefaultRetention        = 24 * time.Hour
	DefaultDeliveryTimeout  = 10 * time.Second
	DefaultMaxResponseBytes = 64 << 10
	DefaultUserAgent        = "cropq-webhook/1"
)

// Payload is what a TypeDeliver task carries.
type Payload struct {
	Version int           `json:"v"`
	URL     string        `json:"url"`
	Event   webhook.Event `json:"event"`
	// Traceparent is the trace context of the crop step that enqueued the
	// delivery (tracing on): its span joins the crop's trace. Omitted when
	// tracing is off.
	Traceparent string `json:"traceparent,omitempty"`
}

// Options are the asynq options of a delivery task; zero fields take the
// defaults.
type Options struct {
	Queue     string        // default DefaultQueue
	MaxRetry  int           // default DefaultMaxRetry
	Timeout   time.Duration // default DefaultTaskTimeout
	Retention time.Duration // default DefaultRetention
	// Traceparent is the W3C trace context the delivery's span joins
	// (package tracing); "" with tracing off.
	Traceparent string
}

// FieldError says which input is invalid and why, naming the limit.
type FieldError struct {
	Field, Reason string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Reason }

// StatusError is a delivery the receiver answered with a non-2xx status.
type StatusError struct {
	StatusCode int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("receiver answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// ValidateURL accepts a callback URL of the shape every entrance accepts
// (tasks.ParseCallbackURL: absolute http or https, a host, no credentials,
// at most MaxURLBytes). Its address is checked when it is dialled. The error
// never repeats the URL, whose query may hold a receiver's token.
func ValidateURL(raw string) error {
	if raw == "" {
		return &FieldError{Field: "callbackUrl", Reason: "is required"}
	}
	_, err := tasks.ParseCallbackURL(raw)
	if ve := (*cropapi.ValidationError)(nil); errors.As(err, &ve) {
		return &FieldError{Field: ve.Field, Reason: ve.Reason}
	}
	return err
}

// NewTask returns the delivery task for ev and its options. Its TaskID is
// derived from the request and state, so a repeated notification of the
// same outcome is refused by asynq (ErrTaskIDConflict) rather than sent twice.
func NewTask(callbackURL string, ev webhook.Event, o Options) (*asynq.Task, []asynq.Option, error) {
	if err := ValidateURL(callbackURL); err != nil {
		return nil, nil, err
	}
	if ev.RequestID == "" {
		return nil, nil, &FieldError{Field: "requestId", Reason: "is required"}
	}
	switch ev.State {
	case webhook.StateSucceeded, webhook.StateFailed, webhook.StateCanceled:
	default:
		return nil, nil, &FieldError{Field: "state", Reason: fmt.Sprintf("must be one of %s, %s, %s", webhook.StateSucceeded, webhook.StateFailed, webhook.StateCanceled)}
	}
	if ev.At.IsZero() {
		ev.At = time.Now().UTC()
	}
	b, err := json.Marshal(Payload{Version: PayloadVersion, URL: callbackURL, Event: ev, Traceparent: o.Traceparent})
	if err != nil {
		return nil, nil, fmt.Errorf("webhook: encode payload: %w", err)
	}
	if o.Queue == "" {
		o.Queue = DefaultQueue
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = DefaultMaxRetry
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTaskTimeout
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	opts := []asynq.Option{
		asynq.TaskID("webhook:" + ev.RequestID + ":" + ev.State),
		asynq.Queue(o.Queue),
		asynq.MaxRetry(o.MaxRetry),
		asynq.Timeout(o.Timeout),
		asynq.Retention(o.Retention),
	}
	return asynq.NewTask(TypeDeliver, b), opts, nil
}

// Config configures a Deliverer; zero fields take the defaults.
type Config struct {
	Secret           []byte // HMAC key; required
	Allow            []netip.Prefix
	Timeout          time.Duration // one delivery, default DefaultDeliveryTimeout
	MaxResponseBytes int64         // response body read and discarded up to this, default 64 KiB
	UserAgent        string        // default DefaultUserAgent
	Logger           *slog.Logger
	Now              func() time.Time
	// TracerProvider makes a "deliver webhook" span of each delivery, in
	// the crop's trace, and sends its traceparent to the receiver (nil: none).
	TracerProvider trace.TracerProvider
}

// Deliverer sends webhooks; it is the asynq handler of TypeDeliver.
type Deliverer struct {
	secret  []byte
	client  *http.Client
	timeout time.Duration
	maxResp int64
	ua      string
	log     *slog.Logger
	now     func() time.Time
	tracer  trace.Tracer // nil with tracing off
}

// NewDeliverer returns a Deliverer whose HTTP client never follows
// redirects, ignores proxy settings (the guard must see the real peer) and
// refuses, at dial time, any address Guard{Allow: cfg.Allow} blocks.
func NewDeliverer(cfg Config) (*Deliverer, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("webhook: new deliverer: secret is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultDeliveryTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	guard := Guard{Allow: append([]netip.Prefix(nil), cfg.Allow...)}
	dialer := &net.Dialer{
		Timeout:   cfg.Timeout,
		KeepAlive: 30 * time.Second,
		// Control sees the resolved address about to be connected, so the
		// check applies to what DNS answered at dial time, not earlier.
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("webhook: dial: parse address %q: %w", address, err)
			}
			return guard.Check(ap.Addr())
		},
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	}
	client := &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		// A redirect could point anywhere, including somewhere the receiver
		// never validated; the 3xx itself is returned and treated as final.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Deliverer{
		secret:  append([]byte(nil), cfg.Secret...),
		client:  client,
		timeout: cfg.Timeout,
		maxResp: cfg.MaxResponseBytes,
		ua:      cfg.UserAgent,
		log:     cfg.Logger,
		now:     cfg.Now,
		tracer:  tracing.TracerIfOn(cfg.TracerProvider),
	}, nil
}

// ProcessTask delivers one webhook. It returns nil on 2xx; an error wrapping
// asynq.SkipRetry when retrying cannot help (bad payload, blocked address,
// 3xx, 4xx other than 408 and 429); a plain error otherwise, so asynq retries
// with backoff. Errors never contain the URL's query or credentials.
func (d *Deliverer) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := decodePayload(t.Payload())
	if err != nil {
		return fmt.Errorf("webhook: decode payload: %w: %w", err, asynq.SkipRetry)
	}
	if d.tracer == nil {
		return d.deliver(ctx, p)
	}
	ctx, span := d.span(ctx, p)
	err = d.deliver(ctx, p)
	endSpan(span, err)
	return err
}

// deliver posts p's event to its URL.
func (d *Deliverer) deliver(ctx context.Context, p Payload) error {
	if err := ValidateURL(p.URL); err != nil {
		return fmt.Errorf("webhook: %w: %w", err, asynq.SkipRetry)
	}
	safeURL := redact.URL(p.URL)
	log := d.log.With("request_id", p.Event.RequestID, "state", p.Event.State, "url", safeURL)

	body, err := json.Marshal(p.Event)
	if err != nil {
		return fmt.Errorf("webhook: encode event: %w: %w", err, asynq.SkipRetry)
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook: new request %s: %w: %w", safeURL, redact.Error(err), asynq.SkipRetry)
	}
	ts := d.now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.ua)
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign(d.secret, ts, body))
	if tp := tracing.Traceparent(ctx); tp != "" {
		req.Header.Set("Traceparent", tp) // the receiver's spans may join the crop's trace
	}

	start := time.Now()
	resp, err := d.client.Do(req)
	if err != nil {
		err = redact.Error(err)
		var be *BlockedError
		if errors.As(err, &be) {
			log.Warn("webhook refused: blocked address", "ip", be.IP.String())
			return fmt.Errorf("webhook: %w: %w", err, asynq.SkipRetry)
		}
		log.Info("webhook delivery failed, will retry", "err", err)
		return fmt.Errorf("webhook: %w", err)
	}
	// Drain a bounded amount so the connection can be reused without
	// letting a receiver stream an unbounded body at us.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, d.maxResp))
	_ = resp.Body.Close()

	code := resp.StatusCode
	log = log.With("status", code, "duration", time.Since(start))
	switch {
	case code >= 200 && code < 300:
		log.Debug("webhook delivered")
		return nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		log.Info("webhook receiver failed, will retry")
		return fmt.Errorf("webhook: post %s: %w", safeURL, &StatusError{StatusCode: code})
	default:
		log.Warn("webhook refused by receiver, giving up")
		return fmt.Errorf("webhook: post %s: %w: %w", safeURL, &StatusError{StatusCode: code}, asynq.SkipRetry)
	}
}

// decodePayload is strict (the entrances' decoder): a payload this version does not fully understand
// is refused rather than half-delivered.
func decodePayload(b []byte) (Payload, error) {
	var p Payload
	if err := strictjson.Unmarshal(b, &p); err != nil {
		return Payload{}, err
	}
	if p.Version != PayloadVersion {
		return Payload{}, fmt.Errorf("unsupported version %d", p.Version)
	}
	return p, nil
}
