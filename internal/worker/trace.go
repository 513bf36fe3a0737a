package worker

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Span names of one attempt (docs/tracing.md). The attempt's span is
// "process <queue>" (messaging semantic conventions).
const (
	SpanQueueWait = "queue wait"
	SpanReuse     = "reuse"
	SpanQuotaWait = "quota wait"
	SpanVendor    = "crop api call"
	SpanCopy      = "copy result"
	SpanNotify    = "notify"
)

// processSpan starts the CONSUMER span of one attempt: a child of the
// request's creation context (the producer's "publish" span, carried as
// the payload's traceparent), and linked to it as the conventions ask, so
// that every attempt, retry and rescue of a crop lands in its one trace.
// The first attempt also records the time the request waited, from its
// acceptance to this attempt's start, as a "queue wait" span.
func (h *Handler) processSpan(ctx context.Context, p tasks.CropPayload, run TaskRun, n int) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		tracing.MessagingSystem.String(tracing.SystemValue),
		tracing.MessagingOp.String("process"),
		tracing.MessagingOpName.String("process"),
		tracing.MessagingDest.String(run.Queue),
		tracing.MessagingID.String(p.RequestID),
		tracing.TaskID.String(run.TaskID),
		tracing.Attempt.Int(n),
		tracing.Tenant.String(p.EffectiveTenant()),
		tracing.Rescue.Bool(p.Rescue != nil),
	}
	if p.Rescue != nil {
		attrs = append(attrs, tracing.RescueFrom.String(p.Rescue.From))
	}
	if p.BatchID != "" {
		attrs = append(attrs, tracing.Batch.String(p.BatchID))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	parent := ctx
	if sc, err := tracing.Parse(p.Traceparent); err == nil {
		parent = trace.ContextWithRemoteSpanContext(ctx, sc)
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	start := h.cfg.Now()
	if n == 1 && p.Rescue == nil && !p.EnqueuedAt.IsZero() && p.EnqueuedAt.Before(start) {
		_, wait := h.tracer.Start(parent, SpanQueueWait, trace.WithTimestamp(p.EnqueuedAt),
			trace.WithAttributes(tracing.MessagingID.String(p.RequestID)))
		wait.End(trace.WithTimestamp(start))
	}
	opts = append(opts, trace.WithAttributes(attrs...), trace.WithTimestamp(start))
	return h.tracer.Start(parent, "process "+run.Queue, opts...)
}

// endSpan records err on span (nil: success) and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		_, code := Classify(err)
		span.SetAttributes(tracing.ErrorType.String(code))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// span starts a child span of the attempt's, or none with tracing off.
func (h *Handler) span(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if h.tracer == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return h.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// traced runs fn in a child span named name, recording its error.
func (h *Handler) traced(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	if h.tracer == nil {
		return fn(ctx)
	}
	ctx, span := h.tracer.Start(ctx, name)
	err := fn(ctx)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(tracing.ErrorType.String(errorType(err)))
	}
	span.End()
	return err
}

// vendorSpan starts the CLIENT span of one call to the crop API.
func (h *Handler) vendorSpan(ctx context.Context) (context.Context, trace.Span) {
	if h.tracer == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return h.tracer.Start(ctx, SpanVendor, trace.WithSpanKind(trace.SpanKindClient))
}

// endVendorSpan records the vendor's answer: its request id and resCode,
// and error.type for a refusal (429, 501 and every other code).
func endVendorSpan(span trace.Span, res cropapi.Result, err error, took time.Duration) {
	if !span.IsRecording() {
		return
	}
	var api *cropapi.APIError
	switch {
	case err == nil:
		span.SetAttributes(tracing.VendorReqID.String(res.RequestID), tracing.VendorCode.Int(200))
		if res.TraceID != "" {
			span.SetAttributes(tracing.VendorTrace.String(res.TraceID))
		}
	case errors.As(err, &api):
		span.SetAttributes(tracing.VendorReqID.String(api.RequestID), tracing.VendorCode.Int(api.ResCode))
	}
	if err != nil {
		span.SetAttributes(tracing.ErrorType.String(errorType(err)))
		span.SetStatus(codes.Error, err.Error())
	}
	span.SetAttributes(attribute.Int64("cropq.vendor.took_ms", took.Milliseconds()))
	span.End()
}

// errorType is error.type: the crop API's stable code (501, http_429…)
// when it answered, the worker's failure code otherwise.
func errorType(err error) string {
	if c := cropapi.CodeOf(err); c != "" {
		return c
	}
	_, code := Classify(err)
	return code
}

// endCopySpan records where the result was stored, or why it was not.
func endCopySpan(span trace.Span, stored results.Stored, err error) {
	if !span.IsRecording() {
		return
	}
	if err != nil {
		span.SetAttributes(tracing.ErrorType.String(errorType(err)))
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(tracing.Bucket.String(stored.Bucket), tracing.Key.String(stored.Key), tracing.Size.Int64(stored.Size))
	}
	span.End()
}

// reuseTraced is reuseOrCoalesce in a "reuse" span: whether a stored
// result was copied (or a twin's waited for) instead of paying.
func (h *Handler) reuseTraced(ctx context.Context, a attempt, rec status.Record) (*claim, bool, error) {
	if h.tracer == nil || h.cfg.Dedup == nil || h.cfg.Reuse == nil {
		return h.reuseOrCoalesce(ctx, a, rec)
	}
	ctx, span := h.tracer.Start(ctx, SpanReuse)
	c, ended, err := h.reuseOrCoalesce(ctx, a, rec)
	span.SetAttributes(attribute.Bool("cropq.reuse.ended", ended), attribute.Bool("cropq.reuse.keyed", c != nil))
	if err != nil {
		span.SetAttributes(tracing.ErrorType.String(errorType(err)))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	return c, ended, err
}
