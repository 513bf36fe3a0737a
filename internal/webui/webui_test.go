package webui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/internal/webui"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// links stands in for the presigner (signing is local; storage's own test
// checks real links against MinIO).
type links struct{}

func (links) GetURL(_ context.Context, bucket, key, filename string) (string, error) {
	u := "https://s3.example.com/" + bucket + "/" + key + "?X-Amz-Signature=sig"
	if filename != "" {
		u += "&response-content-disposition=attachment"
	}
	return u, nil
}

var tokens = map[string]string{"acme-tok": "acme", "globex-tok": "globex", "op-tok": tasks.DefaultTenant}

type fixture struct {
	ui   *webui.UI
	st   *records.Store
	prod *producer.Producer
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	bl := backlog.New(rdb, backlog.Config{})
	prod := producer.New(rdb, producer.Config{Backlog: true, Rate: func(context.Context) (float64, error) { return 5, nil }})
	t.Cleanup(func() { _ = prod.Close() })
	ui, err := webui.New(webui.Config{Records: records.NewStore(rdb, status.Config{}), Batches: prod, Links: links{}, Backlog: bl,
		Quota: quota.New(rdb, quota.Config{Account: "k", Rate: 5}), Storage: func(context.Context) error { return nil },
		Saved: func(context.Context) (map[string]int64, error) {
			return map[string]int64{"reused": 7, "coalesced": 2}, nil
		},
		Replay: prod.Replay,
		Tenant: func(r *http.Request) (string, bool) {
			_, pw, ok := r.BasicAuth()
			t, known := tokens[pw]
			return t, ok && known
		}})
	require.NoError(t, err)

	var reqs []tasks.Request
	for i := range 3 {
		reqs = append(reqs, tasks.Request{RequestID: fmt.Sprintf("a-%d", i), ImageURL: "https://cdn.example.com/a.jpg",
			Params: tasks.Params{TargetWidth: 800, TargetHeight: 600, BatchID: "feed", Tenant: "acme"}})
	}
	reqs = append(reqs, tasks.Request{RequestID: "g-1", ImageURL: "https://cdn.example.com/g.jpg", Params: tasks.Params{TargetWidth: 500,
		TargetHeight: 500, BatchID: "feed", Tenant: "globex"}})
	for _, res := range prod.EnqueueBatch(context.Background(), reqs) {
		require.Equal(t, producer.Enqueued, res.Outcome, "%v", res.Err)
	}
	st := records.NewStore(rdb, status.Config{})
	ctx := context.Background()
	for _, u := range []records.Update{{To: status.Running, Attempt: 1}, {To: status.Cropped, Attempt: 1, Checkpoint: &status.Checkpoint{ResultURL: "https://r", APIRequestID: "api-1"}},
		{To: status.Succeeded, Attempt: 1, Stored: &status.Stored{Bucket: "crops", Key: "acme/a-0.jpg", Size: 2048, APIRequestID: "api-1"}}} {
		_, err := st.Transition(ctx, "a-0", u)
		require.NoError(t, err)
	}
	for _, u := range []records.Update{{To: status.Running, Attempt: 1}, {To: status.Failed, Attempt: 1, ErrorCode: "1001", ErrorMessage: "cannot decode <img>"}} {
		_, err := st.Transition(ctx, "a-1", u)
		require.NoError(t, err)
	}
	// a-2 waits, urgent beyond acme's share: the feeder marked it.
	ok, err := st.ServedAs(ctx, "a-2", "normal")
	require.NoError(t, err)
	require.True(t, ok)
	return fixture{ui: ui, st: st, prod: prod}
}

func (f fixture) get(t *testing.T, token, path string) (int, string, http.Header) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if token != "" {
		req.SetBasicAuth("someone", token)
	}
	rec := httptest.NewRecorder()
	f.ui.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String(), rec.Header()
}

func TestPagesAndWhoSeesThem(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, token, path string
		code              int
		has, hasNot       []string
	}{
		{"no token", "", "/ui/", http.StatusUnauthorized, nil, []string{"feed"}},
		{"wrong token", "nope", "/ui/batches/feed", http.StatusUnauthorized, nil, nil},
		{"stylesheet needs no token", "", "/ui/static/style.css", http.StatusOK, []string{"--focus"}, nil},
		{"tenant overview: its batch, no failures panel", "acme-tok", "/ui/", http.StatusOK,
			[]string{`data-batch="feed"`, "1 succeeded · <span class=\"k fail\"></span>1 failed · 1 remaining", `id="calls-hour"`,
				`id="calls-saved" data-value="9">9 <small>(reused 7, coalesced 2)</small>`},
			[]string{"Failures, last hour", `data-tenant="globex"`}},
		{"operator overview: every tenant, failures, storage", "op-tok", "/ui/", http.StatusOK,
			[]string{`data-code="1001"`, "Default results bucket: reachable", `data-tenant="globex"`, `data-tenant="acme"`}, nil},
		{"batch grid, failures first", "acme-tok", "/ui/batches/feed", http.StatusOK,
			[]string{`data-request-id="a-1"`, `data-request-id="a-0"`, `data-request-id="a-2"`, "aspect-ratio: 800 / 600",
				"https://s3.example.com/crops/acme/a-0.jpg?X-Amz-Signature=sig", "cannot decode &lt;img&gt;", `<code class="code">1001</code>`},
			[]string{"g-1"}},
		{"filtered by state", "acme-tok", "/ui/batches/feed?state=queued", http.StatusOK, []string{`data-request-id="a-2"`, "Showing 1–1 of 1 queued"}, []string{`data-request-id="a-0"`}},
		{"a page past the end", "acme-tok", "/ui/batches/feed?page=9", http.StatusOK, []string{"page 9 of 1"}, []string{`class="card`}},
		{"same batch id, other tenant: its own batch", "globex-tok", "/ui/batches/feed", http.StatusOK, []string{`data-request-id="g-1"`}, []string{"a-0"}},
		{"another tenant's batch by name", "globex-tok", "/ui/batches/feed?tenant=acme", http.StatusNotFound, nil, []string{"a-0"}},
		{"operator picks the tenant", "op-tok", "/ui/batches/feed?tenant=acme", http.StatusOK, []string{`data-request-id="a-0"`}, nil},
		{"operator's own tenant has no such batch", "op-tok", "/ui/batches/feed", http.StatusNotFound, nil, nil},
		{"unknown batch", "acme-tok", "/ui/batches/nope", http.StatusNotFound, []string{"no batch nope"}, nil},
		{"bad state", "acme-tok", "/ui/batches/feed?state=lost", http.StatusBadRequest, []string{"invalid state"}, nil},
		{"bad page", "acme-tok", "/ui/batches/feed?page=0", http.StatusBadRequest, []string{"invalid page"}, nil},
		{"request page", "acme-tok", "/ui/crops/a-0", http.StatusOK,
			[]string{"acme/a-0.jpg", "2.0 KiB (2048 bytes)", "api-1", "response-content-disposition=attachment", `<ol class="timeline" id="history" reversed>`}, nil},
		{"a request served below its lane says so", "acme-tok", "/ui/crops/a-2", http.StatusOK, []string{"served as normal"}, nil},
		{"a request served in its lane", "acme-tok", "/ui/crops/a-1", http.StatusOK, nil, []string{"served as"}},
		{"another tenant's request", "globex-tok", "/ui/crops/a-0", http.StatusNotFound, nil, []string{"acme/a-0.jpg"}},
		{"operator sees any request", "op-tok", "/ui/crops/g-1", http.StatusOK, []string{"g-1"}, nil},
		{"unknown request", "acme-tok", "/ui/crops/zzz", http.StatusNotFound, nil, nil},
		{"bad request id", "acme-tok", "/ui/crops?id=" + url.QueryEscape("a b"), http.StatusBadRequest, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, h := f.get(t, tc.token, tc.path)
			assert.Equal(t, tc.code, code, body)
			for _, s := range tc.has {
				assert.Contains(t, body, s)
			}
			for _, s := range tc.hasNot {
				assert.NotContains(t, body, s)
			}
			if code == http.StatusUnauthorized {
				assert.Contains(t, h.Get("WWW-Authenticate"), "Basic")
			}
			if strings.HasPrefix(tc.path, "/ui/") && !strings.HasPrefix(tc.path, "/ui/static/") && code == http.StatusOK {
				assert.Equal(t, "no-store", h.Get("Cache-Control"))
				assert.Contains(t, h.Get("Content-Security-Policy"), "default-src 'none'", "no script runs on the page")
			}
		})
	}
}

func TestSearchGoesToTheRequest(t *testing.T) {
	f := newFixture(t)
	code, _, h := f.get(t, "acme-tok", "/ui/crops?id=a-0")
	assert.Equal(t, http.StatusSeeOther, code)
	assert.Equal(t, "/ui/crops/a-0", h.Get("Location"))
	code, _, h = f.get(t, "acme-tok", "/ui/crops?id=")
	assert.Equal(t, http.StatusSeeOther, code)
	assert.Equal(t, "/ui/", h.Get("Location"))
}

// A batch's grid pages by 200, with links to the pages beside.
func TestGridPages(t *testing.T) {
	f := newFixture(t)
	var reqs []tasks.Request
	for i := range 450 {
		reqs = append(reqs, tasks.Request{RequestID: fmt.Sprintf("p-%03d", i), ImageURL: "https://cdn.example.com/p.jpg",
			Params: tasks.Params{TargetWidth: 400, TargetHeight: 400, BatchID: "big"}})
	}
	_, err := f.st.CreateMany(context.Background(), toRecords(reqs))
	require.NoError(t, err)
	for _, tc := range []struct {
		page, cards       int
		first, prev, next string
	}{
		{1, 200, "p-000", "", "/ui/batches/big?page=2"},
		{2, 200, "p-200", "/ui/batches/big", "/ui/batches/big?page=3"},
		{3, 50, "p-400", "/ui/batches/big?page=2", ""},
	} {
		code, body, _ := f.get(t, "op-tok", fmt.Sprintf("/ui/batches/big?page=%d", tc.page))
		require.Equal(t, http.StatusOK, code)
		assert.Equal(t, tc.cards, strings.Count(body, `class="card `), "page %d", tc.page)
		assert.Contains(t, body, fmt.Sprintf(`data-request-id="%s"`, tc.first), "page %d starts with %s", tc.page, tc.first)
		assert.Contains(t, body, fmt.Sprintf("page %d of 3", tc.page))
		if tc.next != "" {
			assert.Contains(t, body, `rel="next" href="`+tc.next+`"`)
		} else {
			assert.NotContains(t, body, `rel="next"`)
		}
		if tc.prev != "" {
			assert.Contains(t, body, `rel="prev" href="`+tc.prev+`"`)
		} else {
			assert.NotContains(t, body, `rel="prev"`)
		}
	}
}

func toRecords(reqs []tasks.Request) []status.Record {
	out := make([]status.Record, len(reqs))
	for i, r := range reqs {
		out[i] = status.Record{RequestID: r.RequestID, Params: tasks.Params{BatchID: r.BatchID, Tenant: r.Tenant, TargetWidth: r.TargetWidth, TargetHeight: r.TargetHeight},
			Source: "url", SourceURL: r.ImageURL}
	}
	return out
}
