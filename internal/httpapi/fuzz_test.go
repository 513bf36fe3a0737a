package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// memProducer keeps what it is given in memory, validating as the real
// producer does, so the fuzz target can see what a body left behind.
type memProducer struct {
	mu     sync.Mutex
	stored map[string]tasks.Request
}

func (m *memProducer) EnqueueBatch(_ context.Context, reqs []tasks.Request) []producer.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]producer.Result, len(reqs))
	for i, r := range reqs {
		out[i] = producer.Result{RequestID: r.RequestID, Outcome: producer.Enqueued}
		if err := r.Validate(tasks.Rules{}); err != nil {
			out[i].Outcome, out[i].Err = producer.Invalid, err
			continue
		}
		if _, ok := m.stored[r.RequestID]; ok {
			out[i].Outcome = producer.Known
			continue
		}
		m.stored[r.RequestID] = r
	}
	return out
}

func (m *memProducer) Get(context.Context, string) (status.Record, error) {
	return status.Record{}, status.ErrNotFound
}

func (m *memProducer) Batch(context.Context, string, string) (producer.BatchInfo, error) {
	return producer.BatchInfo{}, status.ErrNotFound
}

func (m *memProducer) Cancel(context.Context, string) (status.Record, error) {
	return status.Record{}, status.ErrNotFound
}

func (m *memProducer) Report(context.Context, string, string, io.Writer) (producer.ReportStats, error) {
	return producer.ReportStats{}, status.ErrNotFound
}

func (m *memProducer) Replay(context.Context, producer.ReplayFilter, bool, string) (producer.ReplayResult, error) {
	return producer.ReplayResult{}, nil
}

func (m *memProducer) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.stored)
}

// fuzzToken is the fuzzed API's one token.
const fuzzToken = "fuzz-token-0123456789"

// FuzzDecodeRequest sends arbitrary bodies to both creating routes: the
// API never panics nor answers 5xx, every error is a problem object with a
// problem type URI, and a refused body leaves nothing behind (a refused
// batch nothing at all; an accepted batch only its enqueued items).
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"requestId":"a","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":800,"targetHeight":800}`,
		`{"requestId":"a","requestId":"b","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":800,"targetHeight":800}`,
		`{"requestId":"a","TargetWidth":800}`,
		`{"requestId":"a","imageUrl":"http://0x7f.1/a.jpg","targetWidth":800,"targetHeight":800,"keyTemplate":"../{requestId}"}`,
		`{"batchId":"b","items":[{"requestId":"a","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":"abc","targetHeight":800},` +
			`{"requestId":"c","imageUrl":"https://cdn.example.com/c.jpg","targetWidth":800,"targetHeight":800}]}`,
		`{"items":[{"requestId":"a"}]} {}`,
		"{\"requestId\":\"a\xff\"}",
		`{"items":[],"batchId":"../x"}`,
		`[]`, `null`, `"x"`, ``,
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, batch bool) {
		m := &memProducer{stored: map[string]tasks.Request{}}
		api, err := httpapi.New(m, httpapi.Config{Tokens: []string{fuzzToken}, MaxBatch: 50, MaxBodyBytes: 1 << 16, MaxBatchBodyBytes: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		path := "/v1/crops"
		if batch {
			path = "/v1/crops/batch"
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fuzzToken)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		code := rec.Code
		if code >= 500 {
			t.Fatalf("%d for %q: %s", code, body, rec.Body.Bytes())
		}
		if code >= 400 {
			var p httpapi.Problem
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != code || len(p.Type) < len("https://cropq.dev/problems/x") {
				t.Fatalf("%d without a problem object: %s", code, rec.Body.Bytes())
			}
			if n := m.count(); n != 0 {
				t.Fatalf("refused (%d) but %d requests were stored", code, n)
			}
			return
		}
		if !batch {
			return
		}
		var resp httpapi.BatchResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("batch answer: %v", err)
		}
		enqueued := 0
		for _, r := range resp.Results {
			if r.Outcome == string(producer.Enqueued) {
				enqueued++
			}
			if r.Outcome == string(producer.Invalid) && (r.Error == nil || r.Error.Type == "") {
				t.Fatalf("invalid item without a problem: %+v", r)
			}
		}
		if n := m.count(); n != enqueued {
			t.Fatalf("%d stored, %d answered enqueued", n, enqueued)
		}
	})
}

// RegisterManifest: the fuzzed routes register no manifests.
func (m *memProducer) RegisterManifest(context.Context, string, producer.ManifestRequest) (producer.BatchInfo, error) {
	return producer.BatchInfo{}, errors.New("memProducer: no manifests")
}
