// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// settings, and holds what cropq's packages share to make one trace per
// crop: the tracer, the W3C traceparent a request carries through Redis,
// and a slog handler that puts trace_id and span_id on log records.
//
// Tracing is off unless an exporter is named (OTEL_TRACES_EXPORTER) or an
// OTLP endpoint is set: then Start returns a no-op provider, no exporter
// runs, and spans cost a few interface calls and no allocation.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of cropq's spans.
const ScopeName = "github.com/cropq/cropq"

// Config is what the standard variables say, read by the command. The
// SDK and the OTLP exporter read the rest themselves (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG),
// OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT…).
type Config struct {
	// Exporter is OTEL_TRACES_EXPORTER: "otlp", "console" or "none"; empty
	// means otlp when OTLPEndpoint is set, off otherwise.
	Exporter string
	// Protocol is OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL; only http/protobuf
	// (the default) is built in.
	Protocol string
	// OTLPEndpoint is OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, set or not.
	OTLPEndpoint string
	// Disabled is OTEL_SDK_DISABLED=true.
	Disabled bool
	// ServiceName is the default service.name when OTEL_SERVICE_NAME does
	// not say (the command's name: cropq-api, cropq-worker).
	ServiceName string
	// Console receives the console exporter's JSON (the process's stdout).
	Console io.Writer
	// ShutdownTimeout bounds the flush at shutdown (default 5s).
	ShutdownTimeout time.Duration
}

// Enabled reports whether c asks for spans to be exported.
func (c Config) Enabled() bool {
	if c.Disabled {
		return false
	}
	switch strings.TrimSpace(strings.ToLower(c.Exporter)) {
	case "none":
		return false
	case "":
		return c.OTLPEndpoint != ""
	}
	return true
}

// Validate names the setting that cannot be used.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	switch e := strings.TrimSpace(strings.ToLower(c.Exporter)); e {
	case "", "otlp", "console":
	default:
		return fmt.Errorf("OTEL_TRACES_EXPORTER=%q: want otlp, console or none (one exporter)", c.Exporter)
	}
	switch c.Protocol {
	case "", "http/protobuf":
	default:
		return fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: only http/protobuf is supported", c.Protocol)
	}
	return nil
}

// Provider is a tracer provider and its shutdown.
type Provider struct {
	trace.TracerProvider
	// On reports whether spans are recorded and exported.
	On       bool
	shutdown func(context.Context) error
	timeout  time.Duration
}

// Shutdown flushes the spans still buffered, within the configured
// timeout, and stops the exporter.
func (p Provider) Shutdown(ctx context.Context) error {
	if p.shutdown == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	defer cancel()
	if err := p.shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flush spans: %w", err)
	}
	return nil
}

// Start builds the provider c asks for: a no-op one when tracing is off.
func Start(ctx context.Context, c Config) (Provider, error) {
	if !c.Enabled() {
		return Provider{TracerProvider: noop.NewTracerProvider()}, nil
	}
	if err := c.Validate(); err != nil {
		return Provider{}, err
	}
	var exp sdktrace.SpanExporter
	var err error
	if strings.EqualFold(strings.TrimSpace(c.Exporter), "console") {
		w := c.Console
		if w == nil {
			w = io.Discard
		}
		exp, err = stdouttrace.New(stdouttrace.WithWriter(w))
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return Provider{}, fmt.Errorf("tracing: exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(serviceName(c.ServiceName)))
	if err != nil {
		return Provider{}, fmt.Errorf("tracing: resource: %w", err)
	}
	// The environment (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins
	// over the command's default name.
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	timeout := c.ShutdownTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return Provider{TracerProvider: tp, On: true, shutdown: tp.Shutdown, timeout: timeout}, nil
}

// Tracer is cropq's tracer of tp (nil: a no-op one).
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(ScopeName)
}

// On reports whether tp records spans: not nil, nor the no-op provider.
func On(tp trace.TracerProvider) bool {
	if tp == nil {
		return false
	}
	_, off := tp.(noop.TracerProvider)
	return !off
}

// TracerIfOn is Tracer(tp) when tp records spans, nil otherwise: packages
// test for nil to skip even the no-op calls and header reads.
func TracerIfOn(tp trace.TracerProvider) trace.Tracer {
	if !On(tp) {
		return nil
	}
	return tp.Tracer(ScopeName)
}

// TraceparentLen is the size of a version-00 W3C traceparent.
const TraceparentLen = 55

// Traceparent is the W3C traceparent of the span in ctx, or "" when there
// is none (tracing off): what a request carries through Redis so that its
// worker's spans join its trace.
func Traceparent(ctx context.Context) string {
	return Format(trace.SpanContextFromContext(ctx))
}

// Format writes sc as a version-00 traceparent ("" when sc is invalid).
func Format(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	var b strings.Builder
	b.Grow(TraceparentLen)
	b.WriteString("00-")
	b.WriteString(tid.String())
	b.WriteByte('-')
	b.WriteString(sid.String())
	if sc.IsSampled() {
		b.WriteString("-01")
	} else {
		b.WriteString("-00")
	}
	return b.String()
}

// ErrTraceparent is a traceparent that is not version 00's 55 bytes.
var ErrTraceparent = errors.New("not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")

// Parse reads a traceparent into a remote span context.
func Parse(s string) (trace.SpanContext, error) {
	if len(s) != TraceparentLen || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return trace.SpanContext{}, ErrTraceparent
	}
	tid, err := trace.TraceIDFromHex(s[3:35])
	if err != nil {
		return trace.SpanContext{}, ErrTraceparent
	}
	sid, err := trace.SpanIDFromHex(s[36:52])
	if err != nil {
		return trace.SpanContext{}, ErrTraceparent
	}
	var flags trace.TraceFlags
	switch s[53:] {
	case "00":
	case "01":
		flags = trace.FlagsSampled
	default:
		// Other flag bits are reserved: keep only "sampled".
		var f byte
		if _, err := fmt.Sscanf(s[53:], "%02x", &f); err != nil {
			return trace.SpanContext{}, ErrTraceparent
		}
		flags = trace.TraceFlags(f) & trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, Remote: true}), nil
}

func serviceName(def string) attributeKV {
	if def == "" {
		def = "cropq"
	}
	return serviceNameKey.String(def)
}

// LogHandler adds trace_id and span_id to records whose context holds a
// valid span, so that logs and traces join.
type LogHandler struct{ slog.Handler }

// Handle implements slog.Handler.
func (h LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h LogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return LogHandler{h.Handler.WithAttrs(as)}
}

// WithGroup implements slog.Handler.
func (h LogHandler) WithGroup(name string) slog.Handler { return LogHandler{h.Handler.WithGroup(name)} }
