package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cropq/cropq/internal/tracing"
)

// serverSpan starts the SERVER span of req, named for its route, under the
// caller's W3C traceparent when it sent a valid one (so that a crop's
// trace starts in the merchant's pipeline). With tracing off it is a
// no-op span and the header is not read.
func (a *API) serverSpan(req *http.Request, name, route string) (context.Context, trace.Span) {
	ctx := req.Context()
	if a.tracer == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	if tp := req.Header.Get("Traceparent"); tp != "" {
		if sc, err := tracing.Parse(tp); err == nil {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	return a.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", req.Method),
			attribute.String("http.route", route),
			attribute.String("url.path", req.URL.Path),
		))
}

// endServerSpan records the answer's status on span: 5xx is an error of
// the server's; 4xx is the client's, and only an attribute.
func endServerSpan(span trace.Span, code int) {
	span.SetAttributes(attribute.Int("http.response.status_code", code))
	if code >= 500 {
		span.SetStatus(codes.Error, "")
		span.SetAttributes(tracing.ErrorType.String(strconv.Itoa(code)))
	}
}

// statusWriter remembers the status code written, for the span.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (report streams flush).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
