package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// POST /v1/replays: a dry run counts, a replay sends again; a tenant's
// token replays its own failures only; a bad filter names its field.
func TestReplayRoute(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	p := producer.New(rdb, producer.Config{Backlog: true})
	t.Cleanup(func() { _ = p.Close() })
	const acmeTok, globexTok = "acme-replay-token-0123456789", "globex-replay-token-0123456789"
	api, err := httpapi.New(p, httpapi.Config{Tokens: []string{token, "acme:" + acmeTok, "globex:" + globexTok}})
	require.NoError(t, err)
	s := httptest.NewServer(api)
	t.Cleanup(s.Close)

	st := records.NewStore(rdb, status.Config{})
	for _, tn := range []string{"acme", "globex"} {
		for i, id := range []string{tn + "-1", tn + "-2"} {
			res := p.EnqueueBatch(ctx, []tasks.Request{{RequestID: id, ImageURL: "https://cdn.example.com/" + id + ".jpg",
				Params: tasks.Params{TargetWidth: 800, TargetHeight: 800, BatchID: "b", Tenant: tn}}})
			require.Equal(t, producer.Enqueued, res[0].Outcome, "%v", res[0].Err)
			_, err := st.Transition(ctx, id, records.Update{To: status.Running, Attempt: 1})
			require.NoError(t, err)
			code := []string{"900", "http_404"}[i]
			_, err = st.Transition(ctx, id, records.Update{To: status.Failed, Attempt: 1, ErrorCode: code, ErrorMessage: "gone"})
			require.NoError(t, err)
		}
	}
	replay := func(tok, body string) (int, map[string]any) {
		resp, b := call(t, s, "POST", "/v1/replays", body, tok)
		var out map[string]any
		require.NoError(t, json.Unmarshal(b, &out), "%s", b)
		return resp.StatusCode, out
	}
	code, out := replay(token, `{"filter":{},"dryRun":true}`)
	assert.Equal(t, http.StatusOK, code)
	assert.EqualValues(t, 4, out["matched"], "the operators see every tenant's")
	code, out = replay(acmeTok, `{"filter":{},"dryRun":true}`)
	assert.Equal(t, http.StatusOK, code)
	assert.EqualValues(t, 2, out["matched"], "a tenant its own")
	code, out = replay(acmeTok, `{"filter":{"tenant":"globex"},"dryRun":true}`)
	assert.Equal(t, http.StatusForbidden, code)
	assert.Equal(t, "filter.tenant", out["field"])

	for _, c := range []struct{ body, field string }{
		{`{}`, "filter"},
		{`{"dryRun":true}`, "filter"},
		{`{"filter":{"batchId":""}}`, "filter.batchId"},
		{`{"filter":{"batchId":"a b"}}`, "filter.batchId"},
		{`{"filter":{"code":"no spaces"}}`, "filter.code"},
		{`{"filter":{"since":"yesterday"}}`, "filter.since"},
		{`{"filter":{"since":"2026-12-06T10:00:00Z","until":"2026-12-06T09:00:00Z"}}`, "filter.until"},
		{`{"filter":{"colour":"red"}}`, "filter.colour"},
		{`{"filter":{},"dryRun":"yes"}`, "dryRun"},
	} {
		code, out := replay(token, c.body)
		assert.Equal(t, http.StatusBadRequest, code, c.body)
		assert.Equal(t, c.field, out["field"], "%s: %v", c.body, out)
	}

	resp, _ := call(t, s, "POST", "/v1/replays", nil, token)
	assert.Equal(t, http.StatusUnsupportedMediaType, resp.StatusCode, "a body as JSON, like every POST")

	code, out = replay(acmeTok, `{"filter":{"code":"http_404"}}`)
	assert.Equal(t, http.StatusAccepted, code)
	assert.EqualValues(t, 1, out["replayed"])
	rec, err := p.Get(ctx, "acme-2")
	require.NoError(t, err)
	assert.Equal(t, status.Queued, rec.State)
	rec, err = p.Get(ctx, "globex-2")
	require.NoError(t, err)
	assert.Equal(t, status.Failed, rec.State, "another tenant's is untouched")
	audits, err := p.Replays(ctx, 1)
	require.NoError(t, err)
	require.Len(t, audits, 1)
	assert.Contains(t, audits[0].By, "tenant acme, token sha256:")
	assert.NotContains(t, audits[0].By, acmeTok)
}
