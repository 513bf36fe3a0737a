package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
)

const token = "test-token-1-0123456789"

func newServer(t *testing.T, cfg httpapi.Config) *httptest.Server {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	p := producer.New(rdb, producer.Config{})
	t.Cleanup(func() { _ = p.Close() })
	cfg.Tokens = []string{"other-token-0123456789", token}
	api, err := httpapi.New(p, cfg)
	require.NoError(t, err)
	s := httptest.NewServer(api)
	t.Cleanup(s.Close)
	return s
}

func call(t *testing.T, s *httptest.Server, method, path string, body any, tok string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(t, err)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.URL+path, r)
	require.NoError(t, err)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, out
}

func crop(id string, w int) map[string]any {
	return map[string]any{"requestId": id, "imageUrl": "https://cdn.example.com/" + id + ".jpg", "targetWidth": w, "targetHeight": 800}
}

func decodeProblem(t *testing.T, resp *http.Response, body []byte) httpapi.Problem {
	t.Helper()
	assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	var p httpapi.Problem
	require.NoError(t, json.Unmarshal(body, &p), string(body))
	assert.Equal(t, resp.StatusCode, p.Status)
	return p
}

// Every documented route exists and every route is documented.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	s := newServer(t, httpapi.Config{})
	resp, body := call(t, s, "GET", "/openapi.json", nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(body, &doc))
	assert.True(t, strings.HasPrefix(doc.OpenAPI, "3."))
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			if method != "parameters" {
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	slices.Sort(documented)
	assert.Equal(t, httpapi.Routes(), documented)

	// And each documented route answers something other than "no such route".
	for _, r := range documented {
		method, path, _ := strings.Cut(r, " ")
		path = strings.NewReplacer("{requestId}", "x-1", "{batchId}", "b-1").Replace(path)
		resp, body := call(t, s, method, path, "{}", token)
		assert.NotContains(t, string(body), "no such route", r)
		assert.NotEqual(t, http.StatusMethodNotAllowed, resp.StatusCode, r)
	}
}

func TestAuth(t *testing.T) {
	s := newServer(t, httpapi.Config{})
	for _, tok := range []string{"", "wrong", token + "x"} {
		resp, body := call(t, s, "GET", "/v1/crops/x-1", nil, tok)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
		decodeProblem(t, resp, body)
	}
	for _, tok := range []string{token, "other-token-0123456789"} {
		resp, _ := call(t, s, "GET", "/v1/crops/x-1", nil, tok)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "authorized, unknown id")
	}
	resp, _ := call(t, s, "GET", "/healthz", nil, "")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	_, err := httpapi.New(nil, httpapi.Config{})
	assert.ErrorContains(t, err, "Config.Tokens")
}

func TestCreateGetCancel(t *testing.T) {
	s := newServer(t, httpapi.Config{})

	resp, body := call(t, s, "POST", "/v1/crops", crop("sku-1", 800), token)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	var item httpapi.ItemResult
	require.NoError(t, json.Unmarshal(body, &item))
	assert.Equal(t, "enqueued", item.Outcome)
	assert.Equal(t, status.Queued, item.Status.State)

	resp, body = call(t, s, "POST", "/v1/crops", crop("sku-1", 800), token)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the same request answers the existing record")
	require.NoError(t, json.Unmarshal(body, &item))
	assert.Equal(t, "known", item.Outcome)

	resp, body = call(t, s, "POST", "/v1/crops", crop("sku-1", 640), token)
	assert.Equal(t, http.StatusConflict, resp.StatusCode)
	assert.Equal(t, "targetWidth", decodeProblem(t, resp, body).Field)

	resp, body = call(t, s, "POST", "/v1/crops", crop("sku-2", 99), token)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	p := decodeProblem(t, resp, body)
	assert.Equal(t, "targetWidth", p.Field)
	assert.Contains(t, p.Detail, "between 100 and 5000")

	resp, body = call(t, s, "POST", "/v1/crops", `{"requestId":"x","targetWidth":"800"}`, token)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "targetWidth", decodeProblem(t, resp, body).Field)
	resp, body = call(t, s, "POST", "/v1/crops", `{"requestId":"x","colour":"red"}`, token)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, decodeProblem(t, resp, body).Detail, "colour")

	resp, body = call(t, s, "GET", "/v1/crops/sku-1", nil, token)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var rec status.Record
	require.NoError(t, json.Unmarshal(body, &rec))
	assert.Equal(t, "sku-1", rec.RequestID)

	resp, body = call(t, s, "DELETE", "/v1/crops/sku-1", nil, token)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.NoError(t, json.Unmarshal(body, &rec))
	assert.Equal(t, status.Canceled, rec.State)
	resp, body = call(t, s, "DELETE", "/v1/crops/sku-1", nil, token)
	assert.Equal(t, http.StatusConflict, resp.StatusCode)
	assert.Contains(t, decodeProblem(t, resp, body).Detail, "only a queued request")

	resp, body = call(t, s, "GET", "/v1/crops/a..b", nil, token)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "requestId", decodeProblem(t, resp, body).Field)
}

func TestBatch(t *testing.T) {
	s := newServer(t, httpapi.Config{MaxBatch: 3, MaxBodyBytes: 4096})
	items := []any{crop("b-1", 800), crop("b-2", 800), crop("b-3", 50)}
	resp, body := call(t, s, "POST", "/v1/crops/batch", map[string]any{"batchId": "batch-1", "items": items}, token)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	var out httpapi.BatchResponse
	require.NoError(t, json.Unmarshal(body, &out))
	assert.Equal(t, map[string]int{"enqueued": 2, "invalid": 1}, out.Counts)
	require.Len(t, out.Results, 3)
	assert.Equal(t, "targetWidth", out.Results[2].Error.Field)

	resp, body = call(t, s, "GET", "/v1/batches/batch-1", nil, token)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var bs httpapi.BatchStatus
	require.NoError(t, json.Unmarshal(body, &bs))
	assert.Equal(t, int64(2), bs.Total)
	assert.Equal(t, map[string]int64{"queued": 2}, bs.Counts)
	assert.False(t, bs.Done)
	resp, _ = call(t, s, "GET", "/v1/batches/nope", nil, token)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)

	four := append(items, crop("b-4", 800))
	resp, body = call(t, s, "POST", "/v1/crops/batch", map[string]any{"items": four}, token)
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	p := decodeProblem(t, resp, body)
	assert.Equal(t, "items", p.Field)
	assert.Contains(t, p.Detail, "at most 3 crops, got 4")

	resp, body = call(t, s, "POST", "/v1/crops/batch", map[string]any{"items": []any{}}, token)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "items", decodeProblem(t, resp, body).Field)

	big := crop("b-5", 800)
	big["imageBase64"] = strings.Repeat("A", 5000)
	resp, body = call(t, s, "POST", "/v1/crops", big, token)
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	assert.Contains(t, decodeProblem(t, resp, body).Detail, fmt.Sprintf("at most %d bytes", 4096))
}

// A batch's report through the API, on a real Redis: NDJSON, one line per
// request as it stands, the trailers say how many and whether it is
// exact; another tenant's batch of that name is not seen.
func TestBatchReport(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	p := producer.New(rdb, producer.Config{})
	t.Cleanup(func() { _ = p.Close() })
	const acme, globex = "acme-token-0123456789", "globex-token-0123456789"
	api, err := httpapi.New(p, httpapi.Config{Tokens: []string{"acme:" + acme, "globex:" + globex}})
	require.NoError(t, err)
	s := httptest.NewServer(api)
	t.Cleanup(s.Close)

	resp, raw := call(t, s, "POST", "/v1/crops/batch", map[string]any{"batchId": "cat", "items": []any{crop("r-1", 800), crop("r-2", 800)}}, acme)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))
	resp, raw = call(t, s, "DELETE", "/v1/crops/r-1", nil, acme)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))

	report := func(tok string) (*http.Response, map[string]producer.ReportLine) {
		resp, raw := call(t, s, "GET", "/v1/batches/cat/report", nil, tok)
		lines := map[string]producer.ReportLine{}
		if resp.StatusCode != http.StatusOK {
			return resp, lines
		}
		assert.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
		for _, l := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
			var rl producer.ReportLine
			require.NoError(t, json.Unmarshal([]byte(l), &rl), l)
			lines[rl.RequestID] = rl
		}
		return resp, lines
	}
	resp, lines := report(acme)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "canceled", lines["r-1"].State)
	assert.False(t, lines["r-1"].FinishedAt.IsZero())
	assert.Equal(t, "queued", lines["r-2"].State)
	assert.True(t, lines["r-2"].FinishedAt.IsZero())
	assert.Equal(t, "2", resp.Trailer.Get(httpapi.ReportLinesTrailer))
	assert.Equal(t, "false", resp.Trailer.Get(httpapi.ReportDoneTrailer), "the batch runs")

	resp, _ = report(globex)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "another tenant's batch")

	resp, raw = call(t, s, "DELETE", "/v1/crops/r-2", nil, acme)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	resp, lines = report(acme)
	assert.Len(t, lines, 2)
	assert.Equal(t, "canceled", lines["r-2"].State)
	assert.Equal(t, "true", resp.Trailer.Get(httpapi.ReportDoneTrailer), "done: exact")

	// A batch whose manifest is still read is not done, whatever its counts.
	require.NoError(t, rdb.HSet(context.Background(), rediskey.Default.Batch("acme", "cat"), records.ReadingField, "1").Err())
	resp, raw = call(t, s, "GET", "/v1/batches/cat", nil, acme)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	var bs httpapi.BatchStatus
	require.NoError(t, json.Unmarshal(raw, &bs))
	assert.False(t, bs.Done, "still reading its manifest")
	assert.Equal(t, int64(0), bs.Remaining)
	resp, _ = report(acme)
	assert.Equal(t, "false", resp.Trailer.Get(httpapi.ReportDoneTrailer), "not exact while reading")
}

// cutProducer's reports fail after 200 lines (more than the server
// buffers: the headers and those lines have left).
type cutProducer struct{ failingProducer }

func (cutProducer) Report(_ context.Context, _, _ string, w io.Writer) (producer.ReportStats, error) {
	var st producer.ReportStats
	for i := range 200 {
		if _, err := fmt.Fprintf(w, `{"requestId":"r-%d","state":"queued","paidCalls":0}`+"\n", i); err != nil {
			return st, err
		}
		st.Lines++
	}
	return st, errStoreDown
}

// A report that fails once lines were sent is cut: the client gets an
// error reading it, never a short body that looks whole; one that fails
// before is a 503 problem.
func TestAReportThatFailsIsCut(t *testing.T) {
	for name, p := range map[string]httpapi.Producer{"cut": cutProducer{}, "down": failingProducer{}} {
		t.Run(name, func(t *testing.T) {
			api, err := httpapi.New(p, httpapi.Config{Tokens: []string{token}})
			require.NoError(t, err)
			s := httptest.NewServer(api)
			t.Cleanup(s.Close)
			req, err := http.NewRequest("GET", s.URL+"/v1/batches/b-1/report", nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, rerr := io.ReadAll(resp.Body)
			if name == "down" {
				require.NoError(t, rerr)
				assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
				assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
				return
			}
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Error(t, rerr, "the client sees the stream cut, not an end: %s", body)
			assert.Empty(t, resp.Trailer.Get(httpapi.ReportLinesTrailer))
		})
	}
}
