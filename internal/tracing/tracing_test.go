package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/internal/tracing"
)

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  tracing.Config
		want bool
	}{
		{"nothing set", tracing.Config{}, false},
		{"endpoint", tracing.Config{OTLPEndpoint: "http://jaeger:4318"}, true},
		{"console", tracing.Config{Exporter: "console"}, true},
		{"none wins over an endpoint", tracing.Config{Exporter: "none", OTLPEndpoint: "http://x:4318"}, false},
		{"sdk disabled", tracing.Config{Exporter: "otlp", Disabled: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, tc.cfg.Enabled()) })
	}
}

func TestValidateNamesTheVariable(t *testing.T) {
	err := tracing.Config{Exporter: "zipkin"}.Validate()
	require.ErrorContains(t, err, "OTEL_TRACES_EXPORTER")
	err = tracing.Config{Exporter: "otlp", Protocol: "grpc"}.Validate()
	require.ErrorContains(t, err, "OTEL_EXPORTER_OTLP_PROTOCOL")
	require.NoError(t, tracing.Config{Exporter: "none", Protocol: "grpc"}.Validate())
}

func TestStartOffIsNoop(t *testing.T) {
	p, err := tracing.Start(context.Background(), tracing.Config{})
	require.NoError(t, err)
	require.False(t, p.On)
	require.False(t, tracing.On(p.TracerProvider))
	require.Nil(t, tracing.TracerIfOn(p.TracerProvider))
	ctx, span := tracing.Tracer(p.TracerProvider).Start(context.Background(), "x")
	require.False(t, span.IsRecording())
	require.Empty(t, tracing.Traceparent(ctx))
	require.NoError(t, p.Shutdown(context.Background()))
}

func TestConsoleExportsOnShutdown(t *testing.T) {
	var out bytes.Buffer
	p, err := tracing.Start(context.Background(), tracing.Config{Exporter: "console", Console: &out, ServiceName: "cropq-test"})
	require.NoError(t, err)
	require.True(t, p.On)
	ctx, span := tracing.Tracer(p.TracerProvider).Start(context.Background(), "publish crops")
	tp := tracing.Traceparent(ctx)
	require.Len(t, tp, tracing.TraceparentLen)
	span.End()
	require.NoError(t, p.Shutdown(context.Background()))
	var got struct {
		Name        string
		SpanContext struct{ TraceID string }
	}
	require.NoError(t, json.NewDecoder(&out).Decode(&got))
	require.Equal(t, "publish crops", got.Name)
	require.Equal(t, span.SpanContext().TraceID().String(), got.SpanContext.TraceID)
}

func TestTraceparentRoundTrip(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	s := tracing.Format(sc)
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", s)
	back, err := tracing.Parse(s)
	require.NoError(t, err)
	require.Equal(t, sc.TraceID(), back.TraceID())
	require.Equal(t, sc.SpanID(), back.SpanID())
	require.True(t, back.IsSampled())
	require.True(t, back.IsRemote())
}

func TestParseRefusesMalformed(t *testing.T) {
	for _, s := range []string{
		"",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
	} {
		_, err := tracing.Parse(s)
		require.ErrorIs(t, err, tracing.ErrTraceparent, s)
	}
}

func TestLogHandlerAddsIDsOnlyWithASpan(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(tracing.LogHandler{Handler: slog.NewJSONHandler(&buf, nil)})
	log.InfoContext(context.Background(), "no span")
	sc, err := tracing.Parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	require.NoError(t, err)
	log.With("request_id", "r1").InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "with span")
	dec := json.NewDecoder(&buf)
	var first, second map[string]any
	require.NoError(t, dec.Decode(&first))
	require.NoError(t, dec.Decode(&second))
	require.NotContains(t, first, "trace_id")
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", second["trace_id"])
	require.Equal(t, "00f067aa0ba902b7", second["span_id"])
	require.Equal(t, "r1", second["request_id"])
}
