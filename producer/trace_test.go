package producer_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// With tracing on, an accepted request's record (which the backlog's
// feeder rebuilds id-only entries from) and its task carry the context of
// the call's "publish crops" span; with it off, neither does.
func TestPublishSpanContextTravelsWithTheRequest(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx := context.Background()

	for _, backlog := range []bool{false, true} {
		p, rdb := newProducer(t, producer.Config{TracerProvider: tp, Backlog: backlog})
		res := p.Enqueue(ctx, req("traced"))
		require.NoError(t, res.Err)
		spans := rec.Ended()
		publish := spans[len(spans)-1]
		assert.Equal(t, "publish crops", publish.Name())
		assert.Equal(t, trace.SpanKindProducer, publish.SpanKind())
		want := tracing.Format(publish.SpanContext())
		require.Len(t, want, tracing.TraceparentLen)
		stored, err := records.NewStore(rdb, status.Config{}).Get(ctx, "traced")
		require.NoError(t, err)
		assert.Equal(t, want, stored.Traceparent, "backlog=%v", backlog)
		assert.Equal(t, want, res.Record.Traceparent)
		if !backlog {
			assert.Equal(t, want, taskPayload(t, rdb, "traced").Traceparent)
		}
	}

	untraced, rdb := newProducer(t, producer.Config{})
	require.NoError(t, untraced.Enqueue(ctx, req("plain")).Err)
	assert.Empty(t, taskPayload(t, rdb, "plain").Traceparent)
	stored, err := records.NewStore(rdb, status.Config{}).Get(ctx, "plain")
	require.NoError(t, err)
	assert.Empty(t, stored.Traceparent)
}

// A manifest's lines read are published as a group, in one span, and carry
// its context, like any request; the registration's context is the
// batch's (internal/manifest's test).
func TestManifestLinesCarryTheirGroupsContext(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	p, rdb := newProducer(t, producer.Config{TracerProvider: tp, Backlog: true})
	res := p.EnqueueLines(context.Background(), []tasks.Request{req("line-1"), req("line-2")}, []int64{1, 2})
	require.NoError(t, res[0].Err)
	require.NoError(t, res[1].Err)
	st := records.NewStore(rdb, status.Config{})
	one, err := st.Get(context.Background(), "line-1")
	require.NoError(t, err)
	two, err := st.Get(context.Background(), "line-2")
	require.NoError(t, err)
	require.Len(t, one.Traceparent, tracing.TraceparentLen)
	assert.Equal(t, one.Traceparent, two.Traceparent, "one publish span for the group")
	assert.EqualValues(t, 1, one.Line)
}
