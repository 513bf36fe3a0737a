package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cropq/cropq/status"
)

// gotSpan is one span an OTLP receiver was sent.
type gotSpan struct {
	service, name     string
	kind              tracepb.Span_SpanKind
	trace, id, parent string
	attrs             map[string]string
	links             []string // span ids linked to
	errored           bool
	start, end        time.Time
}

// otlpReceiver is an OTLP/HTTP (protobuf) trace endpoint in the test
// process: what Jaeger or a collector would receive from cropq.
type otlpReceiver struct {
	URL   string
	mu    sync.Mutex
	spans []gotSpan
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" {
			http.NotFound(w, req)
			return
		}
		b, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var msg coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.add(&msg)
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *otlpReceiver) add(msg *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range msg.ResourceSpans {
		service := attrMap(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				g := gotSpan{service: service, name: s.Name, kind: s.Kind, trace: hex.EncodeToString(s.TraceId),
					id: hex.EncodeToString(s.SpanId), parent: hex.EncodeToString(s.ParentSpanId), attrs: attrMap(s.Attributes),
					errored: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
					start:   time.Unix(0, int64(s.StartTimeUnixNano)), end: time.Unix(0, int64(s.EndTimeUnixNano))}
				for _, l := range s.Links {
					g.links = append(g.links, hex.EncodeToString(l.SpanId))
				}
				r.spans = append(r.spans, g)
			}
		}
	}
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = fmt.Sprint(x.BoolValue)
		default:
			m[kv.Key] = fmt.Sprint(v)
		}
	}
	return m
}

// inTrace is the spans of trace id received so far.
func (r *otlpReceiver) inTrace(id string) []gotSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []gotSpan
	for _, s := range r.spans {
		if s.trace == id {
			out = append(out, s)
		}
	}
	return out
}

func named(spans []gotSpan, name string) []gotSpan {
	var out []gotSpan
	for _, s := range spans {
		if s.name == name {
			out = append(out, s)
		}
	}
	return out
}

func childrenOf(spans []gotSpan, parent string) map[string]gotSpan {
	out := map[string]gotSpan{}
	for _, s := range spans {
		if s.parent == parent {
			out[s.name] = s
		}
	}
	return out
}

// tracedStack is a stack whose API and workers export spans to an
// in-process OTLP receiver; the caller starts the workers.
func tracedStack(t *testing.T, env ...string) (*stack, *otlpReceiver, string) {
	t.Helper()
	s := newStack(t, stackOptions{})
	recv := newOTLPReceiver(t)
	apiAddr := freeAddr(t)
	s.env = append(s.env, "CROPQ_API_TOKENS="+frontDoorToken, "CROPQ_API_ADDR="+apiAddr,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+recv.URL, "OTEL_BSP_SCHEDULE_DELAY=100")
	s.env = append(s.env, env...)
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")
	return s, recv, base
}

// postTraced submits one crop over HTTP under the caller's traceparent;
// extra is more JSON members (`,"callbackUrl":…`).
func postTraced(t *testing.T, base, id, img, traceparent string, extra ...string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/crops",
		strings.NewReader(fmt.Sprintf(`{"requestId":%q,"imageUrl":%q,"targetWidth":200,"targetHeight":200%s}`, id, img, strings.Join(extra, ""))))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+frontDoorToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", traceparent)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", b)
}

// One crop submitted over HTTP with the merchant's traceparent is one
// trace: the API's SERVER span under the merchant's span, "publish crops"
// under it, and the worker's "process crops" (linked to publish) with the
// queue wait, the quota wait, the vendor call and the S3 copy; the
// callback's delivery joins it, and its POST carries the trace on.
func TestE2ETracingOneTracePerCrop(t *testing.T) {
	hooks := make(chan string, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hooks <- r.Header.Get("Traceparent"):
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	s, recv, base := tracedStack(t, "CROPQ_WEBHOOK_SECRET=whsec-tracing-0123456789", "CROPQ_WEBHOOK_ALLOW=127.0.0.0/8")
	s.startWorker()
	const traceID, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	postTraced(t, base, "traced-1", s.images+"/mug-square.png", "00-"+traceID+"-"+caller+"-01",
		fmt.Sprintf(`,"callbackUrl":%q`, hook.URL+"/hook"))
	rec := s.awaitState("traced-1", 60*time.Second, status.Succeeded)
	require.Len(t, rec.Traceparent, 55)
	assert.True(t, strings.HasPrefix(rec.Traceparent, "00-"+traceID+"-"), "the record keeps the creation context: %s", rec.Traceparent)

	var spans []gotSpan
	require.Eventually(t, func() bool {
		spans = recv.inTrace(traceID)
		return len(named(spans, "process crops")) == 1 && len(named(spans, "copy result")) == 1 && len(named(spans, "deliver webhook")) == 1
	}, 20*time.Second, 100*time.Millisecond, "the worker's spans never arrived: %+v", recv.inTrace(traceID))

	server := named(spans, "POST /v1/crops")
	require.Len(t, server, 1)
	assert.Equal(t, "cropq-api", server[0].service)
	assert.Equal(t, tracepb.Span_SPAN_KIND_SERVER, server[0].kind)
	assert.Equal(t, caller, server[0].parent, "the merchant's traceparent is honoured")
	assert.Equal(t, "202", server[0].attrs["http.response.status_code"])

	publish := named(spans, "publish crops")
	require.Len(t, publish, 1)
	assert.Equal(t, tracepb.Span_SPAN_KIND_PRODUCER, publish[0].kind)
	assert.Equal(t, server[0].id, publish[0].parent)
	assert.Equal(t, "traced-1", publish[0].attrs["messaging.message.id"])
	assert.Equal(t, "crops", publish[0].attrs["messaging.destination.name"])
	assert.Equal(t, "asynq", publish[0].attrs["messaging.system"])
	assert.Equal(t, "00-"+traceID+"-"+publish[0].id+"-01", rec.Traceparent)

	process := named(spans, "process crops")[0]
	assert.Equal(t, "cropq-worker", process.service)
	assert.Equal(t, tracepb.Span_SPAN_KIND_CONSUMER, process.kind)
	assert.Equal(t, publish[0].id, process.parent)
	assert.Equal(t, []string{publish[0].id}, process.links, "linked to the creation context")
	assert.Equal(t, "1", process.attrs["cropq.attempt"])
	assert.Equal(t, "false", process.attrs["cropq.rescue"])
	assert.Equal(t, "traced-1", process.attrs["messaging.message.id"])
	assert.False(t, process.errored)

	wait := named(spans, "queue wait")
	require.Len(t, wait, 1)
	assert.Equal(t, publish[0].id, wait[0].parent)
	assert.False(t, wait[0].end.After(process.start), "the wait ends when the attempt starts")

	kids := childrenOf(spans, process.id)
	for _, name := range []string{"quota wait", "crop api call", "copy result"} {
		assert.Contains(t, kids, name)
	}
	call := kids["crop api call"]
	assert.Equal(t, tracepb.Span_SPAN_KIND_CLIENT, call.kind)
	assert.Equal(t, "200", call.attrs["cropq.vendor.res_code"])
	assert.Equal(t, rec.Stored.APIRequestID, call.attrs["cropq.vendor.request_id"])
	assert.NotEmpty(t, call.attrs["cropq.vendor.request_id"])
	assert.Equal(t, rec.Stored.Key, kids["copy result"].attrs["cropq.s3.key"])

	notify := kids["notify"]
	deliver := named(spans, "deliver webhook")[0]
	assert.Equal(t, notify.id, deliver.parent, "the delivery is the callback's")
	assert.Equal(t, tracepb.Span_SPAN_KIND_CONSUMER, deliver.kind)
	assert.Equal(t, "succeeded", deliver.attrs["cropq.outcome"])
	select {
	case tp := <-hooks:
		assert.Equal(t, "00-"+traceID+"-"+deliver.id+"-01", tp, "the receiver can join the trace")
	case <-time.After(10 * time.Second):
		t.Fatal("the callback never came")
	}
}

// A request the vendor refuses once (resCode 500) and that succeeds on
// its retry shows both attempts in its trace, the first with the vendor's
// code as error.type.
func TestE2ETracingRetryShowsBothAttempts(t *testing.T) {
	s, recv, base := tracedStack(t)
	s.startWorker()
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	s.setFaults(t, `{"p500":1}`)
	postTraced(t, base, "traced-retry", s.images+"/mug-square.png", "00-"+traceID+"-b7ad6b7169203331-01")
	require.Eventually(t, func() bool {
		return len(named(recv.inTrace(traceID), "crop api call")) >= 1
	}, 30*time.Second, 50*time.Millisecond, "the first attempt never called the vendor")
	s.setFaults(t, `{}`)
	s.awaitState("traced-retry", 60*time.Second, status.Succeeded)

	var spans []gotSpan
	require.Eventually(t, func() bool {
		spans = recv.inTrace(traceID)
		return len(named(spans, "copy result")) == 1
	}, 20*time.Second, 100*time.Millisecond)
	process := named(spans, "process crops")
	require.GreaterOrEqual(t, len(process), 2, "one span per attempt")
	byAttempt := map[string]gotSpan{}
	for _, p := range process {
		byAttempt[p.attrs["cropq.attempt"]] = p
	}
	first, last := byAttempt["1"], byAttempt[fmt.Sprint(len(process))]
	assert.True(t, first.errored)
	assert.NotEmpty(t, first.attrs["error.type"])
	failed := childrenOf(spans, first.id)["crop api call"]
	assert.Equal(t, "500", failed.attrs["cropq.vendor.res_code"])
	assert.Equal(t, "500", failed.attrs["error.type"])
	assert.NotEmpty(t, failed.attrs["cropq.vendor.request_id"])
	assert.False(t, last.errored)
	assert.Equal(t, "200", childrenOf(spans, last.id)["crop api call"].attrs["cropq.vendor.res_code"])
	assert.Equal(t, first.parent, last.parent, "every attempt is a child of the one publish span")
	assert.Len(t, named(spans, "queue wait"), 1, "the queue wait is the first attempt's")
}

// The worker running a crop is killed mid-call: the rescue that runs it on
// another worker is a "process crops" span of the same trace, marked as a
// rescue and numbered on (the killed attempt's own span dies with its
// process, unexported).
func TestE2ETracingRescueJoinsTheTrace(t *testing.T) {
	s, recv, base := tracedStack(t, "CROPQ_LEASE_TTL=2s")
	const traceID = "5b8aa5a2d2c872e8321cf37308d69df2"
	s.setFaults(t, `{"latency":4000000000}`)
	s.startWorker()
	victim := s.workers[0]
	postTraced(t, base, "traced-rescue", s.images+"/mug-square.png", "00-"+traceID+"-5fb397be34d26b51-01")
	s.awaitState("traced-rescue", 30*time.Second, status.Running)
	require.NoError(t, victim.Process.Signal(syscall.SIGKILL))
	s.setFaults(t, `{}`)
	s.startWorker()
	s.awaitState("traced-rescue", 60*time.Second, status.Succeeded)

	var rescue gotSpan
	require.Eventually(t, func() bool {
		for _, p := range named(recv.inTrace(traceID), "process crops") {
			if p.attrs["cropq.rescue"] == "true" && len(named(recv.inTrace(traceID), "copy result")) == 1 {
				rescue = p
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "no rescue span: %+v", recv.inTrace(traceID))
	publish := named(recv.inTrace(traceID), "publish crops")
	require.Len(t, publish, 1)
	assert.Equal(t, publish[0].id, rescue.parent)
	assert.Equal(t, "traced-rescue", rescue.attrs["cropq.rescue.from"])
	assert.Equal(t, "2", rescue.attrs["cropq.attempt"], "numbered on from the killed attempt")
	assert.Contains(t, childrenOf(recv.inTrace(traceID), rescue.id), "crop api call")
}
