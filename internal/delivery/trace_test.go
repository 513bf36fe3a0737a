package delivery

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const crop = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func tracedDeliverer(t *testing.T) (*Deliverer, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	d, err := NewDeliverer(Config{Secret: testSecret, Allow: loopback, Now: func() time.Time { return testNow }, TracerProvider: tp})
	require.NoError(t, err)
	return d, rec
}

func attrOf(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// A delivery joins the crop's trace: its span is a child of (and linked
// to) the context the payload carries, and the receiver gets its
// traceparent.
func TestDeliverySpanJoinsTheCropTrace(t *testing.T) {
	for _, tc := range []struct {
		status  int
		errType string
	}{{http.StatusNoContent, ""}, {http.StatusInternalServerError, "500"}} {
		srv, got, _ := receiver(t, tc.status)
		d, rec := tracedDeliverer(t)
		tk, _, err := NewTask(srv.URL+"/hook?token=secret", testEvent(), Options{Traceparent: crop})
		require.NoError(t, err)
		require.Contains(t, string(tk.Payload()), `"traceparent":"`+crop+`"`)
		err = d.ProcessTask(context.Background(), tk)
		require.Equal(t, tc.errType != "", err != nil, "%v", err)

		spans := rec.Ended()
		require.Len(t, spans, 1)
		s := spans[0]
		assert.Equal(t, SpanDeliver, s.Name())
		assert.Equal(t, trace.SpanKindConsumer, s.SpanKind())
		assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", s.SpanContext().TraceID().String())
		assert.Equal(t, "00f067aa0ba902b7", s.Parent().SpanID().String())
		require.Len(t, s.Links(), 1)
		assert.Equal(t, "00f067aa0ba902b7", s.Links()[0].SpanContext.SpanID().String())
		assert.Equal(t, "sku-123", attrOf(s, "messaging.message.id").AsString())
		assert.NotContains(t, attrOf(s, "cropq.webhook.url").AsString(), "secret", "no query string in spans")
		assert.Equal(t, tc.errType, attrOf(s, "error.type").AsString())

		r := <-got
		sent := r.header.Get("Traceparent")
		assert.True(t, strings.HasPrefix(sent, "00-4bf92f3577b34da6a3ce929d0e0e4736-"+s.SpanContext().SpanID().String()), sent)
	}
}

// With tracing off nothing is added: no field in the payload, no header.
func TestDeliveryUntracedAddsNothing(t *testing.T) {
	srv, got, _ := receiver(t, http.StatusNoContent)
	d := deliverer(t, loopback, 0)
	tk := task(t, srv.URL)
	assert.NotContains(t, string(tk.Payload()), "traceparent")
	require.NoError(t, d.ProcessTask(context.Background(), tk))
	assert.Empty(t, (<-got).header.Get("Traceparent"))
}
