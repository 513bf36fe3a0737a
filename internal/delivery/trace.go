package delivery

import (
	"context"
	"errors"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/internal/redact"
	"github.com/cropq/cropq/internal/tracing"
)

// SpanDeliver is the span of one delivery attempt.
const SpanDeliver = "deliver webhook"

// span starts the CONSUMER span of one delivery: a child of, and linked
// to, the crop step that enqueued it (the payload's traceparent), so the
// callback shows in the crop's trace.
func (d *Deliverer) span(ctx context.Context, p Payload) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		tracing.MessagingSystem.String(tracing.SystemValue),
		tracing.MessagingOp.String("process"),
		tracing.MessagingDest.String(DefaultQueue),
		tracing.MessagingID.String(p.Event.RequestID),
		tracing.Outcome.String(p.Event.State),
		tracing.WebhookURL.String(redact.URL(p.URL)),
	)}
	if sc, err := tracing.Parse(p.Traceparent); err == nil {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return d.tracer.Start(ctx, SpanDeliver, opts...)
}

// endSpan records the delivery's outcome: the receiver's status, or why
// it was not reached.
func endSpan(span trace.Span, err error) {
	if err != nil {
		typ := "transport"
		var se *StatusError
		if errors.As(err, &se) {
			typ = strconv.Itoa(se.StatusCode)
			span.SetAttributes(attribute.Int("http.response.status_code", se.StatusCode))
		}
		span.SetAttributes(tracing.ErrorType.String(typ))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
