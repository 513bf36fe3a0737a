package producer

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/tasks"
)

// publishSpan starts the PRODUCER span of one call that accepts reqs
// ("publish crops", messaging semantic conventions): its context is what
// the requests carry to the workers. A batch is one span, for the batch:
// its requests share its trace.
func (p *Producer) publishSpan(ctx context.Context, reqs []tasks.Request) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		tracing.MessagingSystem.String(tracing.SystemValue),
		tracing.MessagingOp.String("send"),
		tracing.MessagingOpName.String("publish"),
		tracing.MessagingDest.String(p.cfg.Task.Queue),
	}
	if len(reqs) == 1 {
		attrs = append(attrs, tracing.MessagingID.String(reqs[0].RequestID), tracing.Tenant.String(reqs[0].EffectiveTenant()))
		if reqs[0].BatchID != "" {
			attrs = append(attrs, tracing.Batch.String(reqs[0].BatchID))
		}
	} else {
		attrs = append(attrs, tracing.MessagingBatchLen.Int(len(reqs)))
	}
	return p.tracer.Start(ctx, "publish "+p.cfg.Task.Queue, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
}

// endPublishSpan says how the call went: the outcome of a single request,
// and an error status when one failed for want of Redis or S3.
func endPublishSpan(span trace.Span, res []Result) {
	if len(res) == 1 {
		span.SetAttributes(tracing.Outcome.String(string(res[0].Outcome)))
	}
	for _, r := range res {
		if r.Outcome == Error {
			span.SetStatus(codes.Error, r.Err.Error())
			span.SetAttributes(tracing.ErrorType.String("enqueue"))
			return
		}
	}
}
