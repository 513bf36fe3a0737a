package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/worker"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// origin serves one photo whose version a test moves on (replaced behind
// the same URL); with validators, an ETag per version and 304s.
type origin struct {
	mu         sync.Mutex
	version    int
	validators bool
	conds      int
}

func (o *origin) set(v int, validators bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.version, o.validators = v, validators
}

func (o *origin) conditional() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conds
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	etag := fmt.Sprintf(`"v%d"`, o.version)
	if r.Header.Get("If-None-Match") != "" {
		o.conds++
	}
	if o.validators {
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	_, _ = fmt.Fprintf(w, "photo version %d", o.version)
}

// handoffs records the tasks handed to the paid queue.
type handoffs struct {
	mu   sync.Mutex
	runs []string
}

func (h *handoffs) ToPaid(_ context.Context, taskID string, attempt int, _ []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.runs = append(h.runs, fmt.Sprintf("%s@%d", taskID, attempt))
	return nil
}

func TestHandlerRevalidatesURLResults(t *testing.T) {
	o := &origin{}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	photo := srv.URL + "/sku-1/main.png"
	fetcher := dedup.NewFetcher(dedup.FetchConfig{AllowPrivate: true})
	withPhoto := func(p *tasks.CropPayload) { p.ImageURL = photo }
	// The twin pays for the photo at version 1; validators says whether
	// the origin sends any.
	twinPays := func(validators bool) func(t *testing.T, r *rig) {
		return func(t *testing.T, r *rig) {
			r.f.Dedup.Keyer = dedup.Keyer{Scope: dedup.ScopeGlobal, Mode: dedup.SourceValidators, Fetch: fetcher}
			o.set(1, validators)
			twin := request("sku-0")
			withPhoto(&twin)
			require.NoError(t, r.process(first(twin.RequestID), twin))
		}
	}
	replaced := func(validators bool) func(t *testing.T, r *rig) {
		return func(t *testing.T, r *rig) {
			twinPays(validators)(t, r)
			o.set(2, validators)
		}
	}
	// The test's origin is on loopback.
	local := func(cfg *worker.HandlerConfig) { cfg.Limits.AllowPrivateHosts = true }
	handed := &handoffs{}
	free := func(cfg *worker.HandlerConfig) {
		local(cfg)
		cfg.FreeQueue, cfg.Handoff = "crops-free", handed
	}
	freeRun := worker.TaskRun{TaskID: id, Queue: "crops-free", MaxRetry: maxRetry}
	entry := func(t *testing.T, r *rig) dedup.Result {
		p := request(id)
		withPhoto(&p)
		k, err := r.f.Dedup.Key(context.Background(), p)
		require.NoError(t, err)
		e, ok := r.f.Dedup.Entry(k)
		require.True(t, ok)
		return e
	}
	runCases(t, []handlerCase{
		{
			name:    "unchanged behind its URL (a 304): reused",
			payload: withPhoto,
			config:  local,
			stage:   twinPays(true),
			want:    want{outcome: done, state: status.Succeeded, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, "sku-0", rec.ReusedFrom)
				assert.Positive(t, o.conditional(), "a conditional request")
				assert.Equal(t, `"v1"`, entry(t, r).Source.ETag, "the validators recorded when it was paid for")
			},
		},
		{
			name:    "replaced behind its URL: paid again, and the entry replaced",
			payload: withPhoto,
			config:  local,
			stage:   replaced(true),
			want:    want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 2, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Empty(t, rec.ReusedFrom)
				e := entry(t, r)
				assert.Equal(t, id, e.RequestID)
				assert.Equal(t, `"v2"`, e.Source.ETag)
			},
		},
		{
			name:    "an origin without validators, unchanged: the digest says so, reused",
			payload: withPhoto,
			config:  local,
			stage:   twinPays(false),
			want:    want{outcome: done, state: status.Succeeded, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, "sku-0", rec.ReusedFrom)
				assert.NotEmpty(t, entry(t, r).Source.Digest)
			},
		},
		{
			name:    "an origin without validators, replaced: paid again",
			payload: withPhoto,
			config:  local,
			stage:   replaced(false),
			want:    want{outcome: done, state: status.Succeeded, paidCalls: 1, apiCalls: 2, stored: true, notified: 1},
		},
		{
			name:    "free queue, unchanged: reused without a quota token",
			payload: withPhoto,
			config:  free,
			stage:   twinPays(true),
			run:     freeRun,
			want:    want{outcome: done, state: status.Succeeded, apiCalls: 1, stored: true, notified: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, 1, r.f.Quota.Waits(), "the twin's token only")
			},
		},
		{
			name:    "free queue, replaced: handed to the paid queue, nothing paid, no token",
			payload: withPhoto,
			config:  free,
			stage:   replaced(true),
			run:     freeRun,
			want:    want{outcome: done, state: status.Running, apiCalls: 1},
			check: func(t *testing.T, r *rig, rec status.Record) {
				assert.Equal(t, 1, r.f.Quota.Waits(), "the twin's token only")
				assert.Equal(t, "sku-0", entry(t, r).RequestID, "the entry is replaced by the paid task, not here")
				assert.Equal(t, []string{id + "@1"}, handed.runs, "handed to the paid queue, taking over from attempt 1")
			},
		},
	})
}
