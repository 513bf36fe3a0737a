package wiring

import (
	"cmp"
	"context"
	"io"
	"log/slog"

	"github.com/cropq/cropq/internal/redact"
	"github.com/cropq/cropq/internal/tracing"
)

// NewLogger builds the process logger: JSON in production, text in dev.
func NewLogger(env Env, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(env.Get("CROPQ_LOG_LEVEL")))
	opts := &slog.HandlerOptions{Level: level}
	if env.Get("CROPQ_LOG_FORMAT") == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// StartTracing starts the tracer provider cfg.Tracing asks for, named
// service (cropq-api, cropq-worker) unless OTEL_SERVICE_NAME says, and
// sets cfg.TracerProvider; with tracing on, log gains trace_id and
// span_id. The caller shuts the provider down (it flushes the spans).
func StartTracing(ctx context.Context, cfg *Config, service string, console io.Writer, log *slog.Logger) (tracing.Provider, *slog.Logger, error) {
	tc := cfg.Tracing
	tc.ServiceName, tc.Console = service, console
	p, err := tracing.Start(ctx, tc)
	if err != nil {
		return tracing.Provider{}, log, err
	}
	if !p.On {
		return p, log, nil
	}
	cfg.TracerProvider = p.TracerProvider
	log.Info("tracing on", "exporter", cmp.Or(tc.Exporter, "otlp"), "otlp_endpoint", redact.URL(tc.OTLPEndpoint), "service", service)
	return p, slog.New(tracing.LogHandler{Handler: log.Handler()}), nil
}
