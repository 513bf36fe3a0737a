package httpapi_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// tenantProducer keeps requests in memory and records them as the real
// producer does, with the tenant and priority filled in, so the API's
// tenant rules can be tested apart from the producer's bookkeeping.
type tenantProducer struct {
	mu   sync.Mutex
	reqs map[string]tasks.Request
	recs map[string]status.Record
}

func newTenantProducer() *tenantProducer {
	return &tenantProducer{reqs: map[string]tasks.Request{}, recs: map[string]status.Record{}}
}

func (m *tenantProducer) EnqueueBatch(_ context.Context, reqs []tasks.Request) []producer.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]producer.Result, len(reqs))
	for i, r := range reqs {
		out[i] = producer.Result{RequestID: r.RequestID}
		if err := r.Validate(tasks.Rules{}); err != nil {
			out[i].Outcome, out[i].Err = producer.Invalid, err
			continue
		}
		fp := r.Fingerprint("")
		if have, ok := m.recs[r.RequestID]; ok {
			out[i].Record = have
			if f := tasks.FingerprintDiff(have.Fingerprint, fp); f != "" {
				out[i].Outcome, out[i].Err = producer.Conflict, &producer.ConflictError{RequestID: r.RequestID, Field: f}
			} else {
				out[i].Outcome = producer.Known
			}
			continue
		}
		now := time.Now().UTC()
		rec := status.Record{RequestID: r.RequestID, State: status.Queued, CreatedAt: now, UpdatedAt: now,
			Params: tasks.Params{TargetWidth: r.TargetWidth, TargetHeight: r.TargetHeight, BatchID: r.BatchID, Tenant: r.EffectiveTenant(),
				Priority: r.EffectivePriority()}, Source: "url", SourceURL: r.ImageURL, Fingerprint: fp}
		m.reqs[r.RequestID], m.recs[r.RequestID] = r, rec
		out[i].Outcome, out[i].Record = producer.Enqueued, rec
	}
	return out
}

func (m *tenantProducer) Get(_ context.Context, id string) (status.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.recs[id]
	if !ok {
		return status.Record{}, status.ErrNotFound
	}
	return rec, nil
}

func (m *tenantProducer) Batch(_ context.Context, tenant, id string) (producer.BatchInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	bi := producer.BatchInfo{Counts: map[status.State]int64{}, Done: true, ETA: -1}
	for _, rec := range m.recs {
		if rec.BatchID == id && rec.Tenant == cmp.Or(tenant, "default") {
			bi.Counts[rec.State]++
			bi.Total++
			if !rec.State.Terminal() {
				bi.Remaining++
				bi.Done = false
			}
		}
	}
	if bi.Total == 0 {
		return bi, status.ErrNotFound
	}
	return bi, nil
}

// Report writes the lines of the tenant's batch's requests, as the real
// producer does for a batch none of whose requests ended.
func (m *tenantProducer) Report(_ context.Context, tenant, id string, w io.Writer) (producer.ReportStats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var st producer.ReportStats
	for _, rec := range m.recs {
		if rec.BatchID == id && rec.Tenant == cmp.Or(tenant, "default") {
			b, _ := json.Marshal(producer.ReportLine{RequestID: rec.RequestID, State: string(rec.State)})
			if _, err := w.Write(append(b, '\n')); err != nil {
				return st, err
			}
			st.Lines++
		}
	}
	if st.Lines == 0 {
		return st, status.ErrNotFound
	}
	return st, nil
}

func (m *tenantProducer) Replay(context.Context, producer.ReplayFilter, bool, string) (producer.ReplayResult, error) {
	return producer.ReplayResult{}, nil
}

func (m *tenantProducer) Cancel(_ context.Context, id string) (status.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.recs[id]
	if !ok {
		return status.Record{}, status.ErrNotFound
	}
	if rec.State != status.Queued {
		return status.Record{}, &status.TransitionError{RequestID: id, From: rec.State, To: status.Canceled}
	}
	rec.State = status.Canceled
	m.recs[id] = rec
	return rec, nil
}

func (m *tenantProducer) stored() map[string]tasks.Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]tasks.Request{}
	for k, v := range m.reqs {
		out[k] = v
	}
	return out
}

func (m *tenantProducer) state(id string) status.State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recs[id].State
}

const (
	tokAcme    = "tok-acme-0123456789"
	tokGlobex  = "tok-globex-0123456789"
	tokDefault = "tok-default-0123456789"
)

func newTenantServer(t *testing.T) (*httptest.Server, *tenantProducer) {
	t.Helper()
	m := newTenantProducer()
	api, err := httpapi.New(m, httpapi.Config{Tokens: []string{"acme:" + tokAcme, "globex:" + tokGlobex, tokDefault}})
	require.NoError(t, err)
	s := httptest.NewServer(api)
	t.Cleanup(s.Close)
	return s, m
}

func TestParseTokens(t *testing.T) {
	got, err := httpapi.ParseTokens([]string{"acme:" + tokAcme, tokDefault, "globex:tok:with:more:colons", "a.b_c-d:" + tokGlobex, "acme:" + tokAcme})
	require.NoError(t, err)
	assert.Equal(t, []httpapi.Token{{Tenant: "acme", Token: tokAcme}, {Tenant: "default", Token: tokDefault},
		{Tenant: "globex", Token: "tok:with:more:colons"}, {Tenant: "a.b_c-d", Token: tokGlobex}}, got,
		"a bare token is the default tenant's; a token's own ':' stay in it; an entry given twice counts once")
	// Characters, not bytes: 16 runes of 2 bytes each are enough, 15 are not.
	_, err = httpapi.ParseTokens([]string{strings.Repeat("é", httpapi.MinTokenLength)})
	assert.NoError(t, err)
	_, err = httpapi.ParseTokens(nil)
	assert.ErrorContains(t, err, "at least one bearer token is required")
}

// Each malformed entry stops the API, naming its position (from 1) and
// never quoting it: a mistyped tenant is never taken for a bare token (an
// operator's).
func TestMalformedTokenEntries(t *testing.T) {
	const secret = "s3cr3t-0123456789-SECRET"
	short := strings.Repeat("x", httpapi.MinTokenLength-1)
	ok := "globex:" + tokGlobex
	for _, tc := range []struct {
		name, entry, want string
	}{
		{"upper-case tenant", "ACME:" + secret, "not a tenant name"},
		{"tenant with ~", "ac~me:" + secret, "not a tenant name"},
		{"tenant with a space", "glo bex:" + secret, "not a tenant name"},
		{"non-ASCII tenant", "acmé:" + secret, "not a tenant name"},
		{"tenant too long", strings.Repeat("a", 65) + ":" + secret, "not a tenant name"},
		{"empty tenant", ":" + secret, "not a tenant name"},
		{"bare token with a colon", "Secret:" + secret, "not a tenant name"},
		{"empty token", "acme:", "token is empty"},
		{"short token", "acme:" + short, fmt.Sprintf("token must be at least %d characters, got %d", httpapi.MinTokenLength, httpapi.MinTokenLength-1)},
		{"short bare token", short, fmt.Sprintf("token must be at least %d characters", httpapi.MinTokenLength)},
		{"token shared by two tenants", "acme:" + tokGlobex, "gives tenant acme a token of tenant globex: a token belongs to one tenant"},
		{"tenant token reused bare", tokGlobex, "gives tenant default a token of tenant globex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, entries := range [][]string{{ok, tokDefault, tc.entry}, {ok, ok, tc.entry}} {
				_, err := httpapi.New(newTenantProducer(), httpapi.Config{Tokens: entries})
				require.Error(t, err)
				var te *httpapi.TokensError
				require.ErrorAs(t, err, &te)
				assert.Equal(t, 3, te.Entry)
				assert.Contains(t, err.Error(), "entry 3: ")
				assert.Contains(t, err.Error(), tc.want)
				for _, part := range []string{secret, short, tokGlobex, tokDefault} {
					assert.NotContains(t, err.Error(), part, "errors never quote a token")
				}
				if strings.Contains(tc.entry, ":") {
					before, _, _ := strings.Cut(tc.entry, ":")
					if before != "" && before != "acme" {
						assert.NotContains(t, err.Error(), before, "nor what may be part of one")
					}
				}
			}
		})
	}
}

func TestTenantTokens(t *testing.T) {
	api, err := httpapi.New(newTenantProducer(), httpapi.Config{Tokens: []string{tokDefault, "acme:" + tokAcme, "acme:" + tokAcme + "-2"}})
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"acme": 2, "default": 1}, api.Tenants())
	for tok, want := range map[string]string{tokDefault: "default", tokAcme: "acme", tokAcme + "-2": "acme", "acme:" + tokAcme: "", "nope": ""} {
		r := httptest.NewRequest("GET", "/v1/crops/x", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		tenant, ok := api.Tenant(r)
		assert.Equal(t, want != "", ok, tok)
		assert.Equal(t, want, tenant, tok)
		assert.Equal(t, want != "", api.Authorized(r), tok)
	}
	// Basic credentials (the web UI) carry a tenant token too.
	r := httptest.NewRequest("GET", "/monitoring/", nil)
	r.SetBasicAuth("anyone", tokAcme)
	tenant, ok := api.Tenant(r)
	assert.True(t, ok)
	assert.Equal(t, "acme", tenant)
	assert.True(t, api.Authorized(r))
}

// A request's tenant is its token's; a body naming another is refused.
func TestTenantOfToken(t *testing.T) {
	s, m := newTenantServer(t)

	resp, body := call(t, s, "POST", "/v1/crops", crop("a-1", 800), tokAcme)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	var item httpapi.ItemResult
	require.NoError(t, json.Unmarshal(body, &item))
	assert.Equal(t, "acme", item.Status.Tenant)
	assert.Equal(t, "acme", m.stored()["a-1"].Tenant, "an empty tenant is the token's")

	named := crop("a-1", 800)
	named["tenant"] = "acme"
	resp, body = call(t, s, "POST", "/v1/crops", named, tokAcme)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "naming its own tenant is the same request: %s", body)

	resp, body = call(t, s, "POST", "/v1/crops", crop("d-1", 800), tokDefault)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	assert.Equal(t, "default", m.stored()["d-1"].EffectiveTenant(), "a bare token is tenant default")
	assert.Empty(t, m.stored()["d-1"].Tenant, "left implicit: the request is what it was before tenants")

	for _, c := range []struct {
		tok, tenant string
	}{{tokAcme, "globex"}, {tokAcme, "default"}, {tokDefault, "acme"}, {tokGlobex, "acme"}} {
		body := crop("x-"+c.tenant, 800)
		body["tenant"] = c.tenant
		resp, raw := call(t, s, "POST", "/v1/crops", body, c.tok)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "%s naming %s: %s", c.tok, c.tenant, raw)
		p := decodeProblem(t, resp, raw)
		assert.Equal(t, "https://cropq.dev/problems/forbidden", p.Type)
		assert.Equal(t, "tenant", p.Field)
		assert.Contains(t, p.Detail, c.tenant)
	}
	assert.Len(t, m.stored(), 2, "nothing recorded for a foreign tenant")

	bad := crop("a-2", 800)
	bad["tenant"] = "ACME"
	resp, raw := call(t, s, "POST", "/v1/crops", bad, tokAcme)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(raw))
	assert.Equal(t, "tenant", decodeProblem(t, resp, raw).Field)

	urgent := crop("a-3", 800)
	urgent["priority"] = "urgent"
	resp, raw = call(t, s, "POST", "/v1/crops", urgent, tokAcme)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))
	require.NoError(t, json.Unmarshal(raw, &item))
	assert.Equal(t, "urgent", item.Status.Priority)
	urgent["priority"] = "high"
	urgent["requestId"] = "a-4"
	resp, raw = call(t, s, "POST", "/v1/crops", urgent, tokAcme)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(raw))
	p := decodeProblem(t, resp, raw)
	assert.Equal(t, "priority", p.Field)
	assert.Contains(t, p.Detail, "urgent, normal, backfill")
}

// A batch naming another tenant in any item is refused whole.
func TestTenantBatch(t *testing.T) {
	s, m := newTenantServer(t)
	foreign := crop("g-2", 800)
	foreign["tenant"] = "acme"
	own := crop("g-3", 800)
	own["tenant"] = "globex"
	resp, raw := call(t, s, "POST", "/v1/crops/batch", map[string]any{"batchId": "gb", "items": []any{crop("g-1", 800), own, foreign}}, tokGlobex)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, string(raw))
	p := decodeProblem(t, resp, raw)
	assert.Equal(t, "tenant", p.Field)
	assert.Contains(t, p.Detail, "items[2]")
	assert.Empty(t, m.stored(), "nothing of a refused batch is recorded")

	resp, raw = call(t, s, "POST", "/v1/crops/batch", map[string]any{"batchId": "gb", "items": []any{crop("g-1", 800), own}}, tokGlobex)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))
	for _, id := range []string{"g-1", "g-3"} {
		assert.Equal(t, "globex", m.stored()[id].Tenant, id)
	}
	// Batch ids are each tenant's own.
	resp, raw = call(t, s, "GET", "/v1/batches/gb", nil, tokGlobex)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	var bs httpapi.BatchStatus
	require.NoError(t, json.Unmarshal(raw, &bs))
	assert.Equal(t, int64(2), bs.Total)
	for _, tok := range []string{tokAcme, tokDefault} {
		resp, raw = call(t, s, "GET", "/v1/batches/gb", nil, tok)
		_, unknown := call(t, s, "GET", "/v1/batches/gz", nil, tok)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "another tenant's batch: %s", raw)
		assert.Equal(t, strings.ReplaceAll(string(unknown), "gz", "gb"), string(raw), "the same answer as an unknown batch")
		resp, raw = call(t, s, "GET", "/v1/batches/gb/report", nil, tok)
		_, unknown = call(t, s, "GET", "/v1/batches/gz/report", nil, tok)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "another tenant's batch report: %s", raw)
		assert.Equal(t, strings.ReplaceAll(string(unknown), "gz", "gb"), string(raw), "the same answer as an unknown batch")
	}
	resp, raw = call(t, s, "GET", "/v1/batches/gb/report", nil, tokGlobex)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	assert.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
	assert.Equal(t, 2, strings.Count(string(raw), "\n"), "one line per request of its own batch: %s", raw)
	assert.Equal(t, "2", resp.Trailer.Get(httpapi.ReportLinesTrailer))

	// An item with an invalid tenant is refused alone, naming the field.
	bad := crop("g-4", 800)
	bad["tenant"] = "Globex"
	resp, raw = call(t, s, "POST", "/v1/crops/batch", map[string]any{"items": []any{bad, crop("g-5", 800)}}, tokGlobex)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))
	var out httpapi.BatchResponse
	require.NoError(t, json.Unmarshal(raw, &out))
	assert.Equal(t, map[string]int{"invalid": 1, "enqueued": 1}, out.Counts)
	assert.Equal(t, "tenant", out.Results[0].Error.Field)

	// Another tenant's request id in a batch: a conflict that shows nothing
	// of the other tenant's record.
	resp, raw = call(t, s, "POST", "/v1/crops", crop("a-1", 800), tokAcme)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))
	resp, raw = call(t, s, "POST", "/v1/crops/batch", map[string]any{"batchId": "gb", "items": []any{crop("a-1", 800), crop("g-1", 800)}}, tokGlobex)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))
	require.NoError(t, json.Unmarshal(raw, &out))
	assert.Equal(t, "conflict", out.Results[0].Outcome)
	assert.Nil(t, out.Results[0].Status, "another tenant's record is not shown")
	assert.Equal(t, "known", out.Results[1].Outcome)
	assert.NotNil(t, out.Results[1].Status, "its own record is")
	assert.NotContains(t, string(raw), "acme")
}

// Another tenant's request id is answered exactly like an unknown one.
func TestTenantRecordsHidden(t *testing.T) {
	s, m := newTenantServer(t)
	resp, raw := call(t, s, "POST", "/v1/crops", crop("a-1", 800), tokAcme)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))

	resp, raw = call(t, s, "GET", "/v1/crops/a-1", nil, tokAcme)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	var rec status.Record
	require.NoError(t, json.Unmarshal(raw, &rec))
	assert.Equal(t, "acme", rec.Tenant)

	for _, method := range []string{"GET", "DELETE"} {
		for _, tok := range []string{tokGlobex, tokDefault} {
			resp, raw := call(t, s, method, "/v1/crops/a-1", nil, tok)
			uresp, uraw := call(t, s, method, "/v1/crops/zz-1", nil, tok)
			require.Equal(t, http.StatusNotFound, resp.StatusCode, "%s with %s: %s", method, tok, raw)
			assert.Equal(t, uresp.StatusCode, resp.StatusCode)
			assert.Equal(t, strings.ReplaceAll(string(uraw), "zz-1", "a-1"), string(raw), "%s with %s: the same answer as an unknown id", method, tok)
			assert.Equal(t, uresp.Header.Get("Content-Type"), resp.Header.Get("Content-Type"))
		}
	}
	assert.Equal(t, status.Queued, m.state("a-1"), "another tenant cannot cancel it")
	resp, raw = call(t, s, "DELETE", "/v1/crops/a-1", nil, tokAcme)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	assert.Equal(t, status.Canceled, m.state("a-1"))

	// A record without a tenant (written before tenants) is the default
	// tenant's.
	m.mu.Lock()
	m.recs["old-1"] = status.Record{RequestID: "old-1", State: status.Queued}
	m.mu.Unlock()
	resp, _ = call(t, s, "GET", "/v1/crops/old-1", nil, tokDefault)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = call(t, s, "GET", "/v1/crops/old-1", nil, tokAcme)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// RegisterManifest: the tenant walls of manifests are tested through the
// real producer (TestManifestWalls).
func (m *tenantProducer) RegisterManifest(context.Context, string, producer.ManifestRequest) (producer.BatchInfo, error) {
	return producer.BatchInfo{}, errors.New("tenantProducer: no manifests")
}
