package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/status"
)

// Tokens map to tenants through a real `cropq api`: a request's tenant is
// its token's, a body or batch naming another tenant is refused (403,
// field tenant) with nothing recorded, another tenant's request is unknown
// (404, as for an id never submitted), and priority and tenant reach the
// record through every entrance (HTTP, CLI flags, CSV and JSONL files).
func TestTenantTokensThroughTheAPI(t *testing.T) {
	const tokA, tokG, tokD = "tok-a-0123456789", "tok-g-0123456789", "tok-d-0123456789"
	f := newFrontDoor(t, "CROPQ_API_TOKENS=acme:"+tokA+",globex:"+tokG+","+tokD)
	do := func(method, path, tok, body string) (int, []byte) {
		t.Helper()
		code, _, b := apiDo(t, method, f.base+path, tok, body)
		return code, b
	}
	crop := func(id, extra string) string {
		return `{"requestId":"` + id + `","imageUrl":"https://cdn.example.com/` + id + `.jpg","targetWidth":800,"targetHeight":800` + extra + `}`
	}
	problemOf := func(b []byte) httpapi.Problem {
		t.Helper()
		var p httpapi.Problem
		require.NoError(t, json.Unmarshal(b, &p), "%s", b)
		return p
	}
	recorded := func() []string {
		t.Helper()
		records, _ := f.queued(t)
		return records
	}

	// The token's tenant is the request's.
	code, b := do("POST", "/v1/crops", tokA, crop("t-a1", ""))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	code, b = do("GET", "/v1/crops/t-a1", tokA, "")
	require.Equal(t, http.StatusOK, code, "%s", b)
	var rec status.Record
	require.NoError(t, json.Unmarshal(b, &rec))
	assert.Equal(t, "acme", rec.Tenant, "GET shows the token's tenant: %s", b)
	assert.Equal(t, "normal", rec.Priority, "GET shows the default priority: %s", b)
	code, b = do("POST", "/v1/crops", tokA, crop("t-a1", `,"tenant":"acme","priority":"normal"`))
	assert.Equal(t, http.StatusOK, code, "naming its own tenant and the default priority is the same request: %s", b)
	code, b = do("POST", "/v1/crops", tokD, crop("t-d1", ""))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	assert.Equal(t, "default", f.record("t-d1").Tenant, "a bare token is tenant default")

	// A body naming another tenant: 403, nothing recorded.
	code, b = do("POST", "/v1/crops", tokA, crop("t-x1", `,"tenant":"globex"`))
	require.Equal(t, http.StatusForbidden, code, "%s", b)
	p := problemOf(b)
	assert.Equal(t, "tenant", p.Field)
	assert.Equal(t, "https://cropq.dev/problems/forbidden", p.Type)
	code, b = do("POST", "/v1/crops", tokD, crop("t-x2", `,"tenant":"acme"`))
	require.Equal(t, http.StatusForbidden, code, "a bare token cannot name a tenant either: %s", b)
	assert.NotContains(t, recorded(), "t-x1")
	assert.NotContains(t, recorded(), "t-x2")

	// A batch with one foreign item: refused whole.
	code, b = do("POST", "/v1/crops/batch", tokA, `{"batchId":"t-batch","items":[`+crop("t-b1", "")+`,`+crop("t-b2", `,"tenant":"globex"`)+`]}`)
	require.Equal(t, http.StatusForbidden, code, "%s", b)
	assert.Equal(t, "tenant", problemOf(b).Field)
	assert.NotContains(t, recorded(), "t-b1")
	assert.NotContains(t, recorded(), "t-b2")
	code, _ = do("GET", "/v1/batches/t-batch", tokA, "")
	assert.Equal(t, http.StatusNotFound, code, "no batch was made")

	// Another tenant's request is unknown to the token, and left alone.
	_, unknown := do("GET", "/v1/crops/t-never", tokG, "")
	code, b = do("GET", "/v1/crops/t-a1", tokG, "")
	assert.Equal(t, http.StatusNotFound, code, "%s", b)
	assert.Equal(t, strings.ReplaceAll(string(unknown), "t-never", "t-a1"), string(b), "the same answer as an unknown id")
	code, b = do("DELETE", "/v1/crops/t-a1", tokG, "")
	assert.Equal(t, http.StatusNotFound, code, "%s", b)
	code, b = do("GET", "/v1/crops/t-a1", tokD, "")
	assert.Equal(t, http.StatusNotFound, code, "%s", b)
	assert.Equal(t, status.Queued, f.record("t-a1").State, "another tenant cannot cancel it")

	// Priorities.
	code, b = do("POST", "/v1/crops", tokG, crop("t-g1", `,"priority":"urgent"`))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	rec = f.record("t-g1")
	assert.Equal(t, "urgent", rec.Priority)
	assert.Equal(t, "globex", rec.Tenant)
	code, b = do("POST", "/v1/crops", tokG, crop("t-g2", `,"priority":"high"`))
	require.Equal(t, http.StatusBadRequest, code, "%s", b)
	p = problemOf(b)
	assert.Equal(t, "priority", p.Field)
	assert.Contains(t, p.Detail, "urgent, normal, backfill")
	code, b = do("POST", "/v1/crops", tokG, crop("t-g3", `,"tenant":"ACME"`))
	require.Equal(t, http.StatusBadRequest, code, "%s", b)
	assert.Equal(t, "tenant", problemOf(b).Field)
	code, b = do("POST", "/v1/crops/batch", tokG, `{"items":[`+crop("t-g4", `,"priority":"backfill"`)+`,`+crop("t-g5", `,"priority":"soon"`)+`]}`)
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	var out httpapi.BatchResponse
	require.NoError(t, json.Unmarshal(b, &out))
	assert.Equal(t, map[string]int{"enqueued": 1, "invalid": 1}, out.Counts)
	assert.Equal(t, "priority", out.Results[1].Error.Field)
	rec = f.record("t-g4")
	assert.Equal(t, "backfill", rec.Priority)
	assert.Equal(t, "globex", rec.Tenant, "a batch item takes the token's tenant")

	// The CLI.
	_, err := f.cropq("enqueue", "--request-id", "t-c1", "--url", "https://cdn.example.com/c1.jpg", "--width", "800", "--height", "800",
		"--priority", "urgent", "--tenant", "acme")
	require.NoError(t, err)
	rec = f.record("t-c1")
	assert.Equal(t, "urgent", rec.Priority)
	assert.Equal(t, "acme", rec.Tenant)
	_, err = f.cropq("enqueue", "--request-id", "t-c2", "--url", "https://cdn.example.com/c2.jpg", "--width", "800", "--height", "800",
		"--priority", "x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "priority")
	_, err = f.cropq("enqueue", "--request-id", "t-c3", "--url", "https://cdn.example.com/c3.jpg", "--width", "800", "--height", "800",
		"--tenant", "Acme")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tenant")
	assert.NotContains(t, recorded(), "t-c2")
	assert.NotContains(t, recorded(), "t-c3")

	// Bulk files: CSV columns and JSONL members.
	dir := t.TempDir()
	csv := filepath.Join(dir, "rows.csv")
	require.NoError(t, os.WriteFile(csv, []byte("requestId,imageUrl,targetWidth,targetHeight,priority,tenant\n"+
		"t-v1,https://cdn.example.com/v1.jpg,800,800,backfill,acme\n"+
		"t-v2,https://cdn.example.com/v2.jpg,800,800,,\n"+
		"t-v3,https://cdn.example.com/v3.jpg,800,800,urgent,globex\n"), 0o644))
	_, err = f.cropq("enqueue", "--file", csv, "--no-progress")
	require.NoError(t, err)
	jsonl := filepath.Join(dir, "rows.jsonl")
	require.NoError(t, os.WriteFile(jsonl, []byte(crop("t-j1", `,"priority":"urgent","tenant":"globex"`)+"\n"), 0o644))
	_, err = f.cropq("enqueue", "--file", jsonl, "--no-progress")
	require.NoError(t, err)
	for id, want := range map[string][2]string{
		"t-v1": {"backfill", "acme"}, "t-v2": {"normal", "default"}, "t-v3": {"urgent", "globex"}, "t-j1": {"urgent", "globex"},
	} {
		rec := f.record(id)
		assert.Equal(t, want, [2]string{rec.Priority, rec.Tenant}, id)
	}
	bad := filepath.Join(dir, "bad.csv")
	require.NoError(t, os.WriteFile(bad, []byte("requestId,imageUrl,targetWidth,targetHeight,priority\n"+
		"t-w1,https://cdn.example.com/w1.jpg,800,800,later\n"), 0o644))
	_, err = f.cropq("enqueue", "--file", bad, "--no-progress")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "priority")
	assert.NotContains(t, recorded(), "t-w1")
}

// Request ids are global: another tenant's id is refused as taken, and
// nothing of the other's request is revealed, field by field or otherwise.
// The operators' web UI opens only to the default tenant's tokens. A batch
// of mixed priorities reports its lowest.
func TestTenantsLearnNothingOfEachOther(t *testing.T) {
	f := newFrontDoor(t, "CROPQ_API_TOKENS=acme:tok-acme-0123456789,globex:tok-globex-0123456789,tok-ops-0123456789")
	body := func(url string, w int) string {
		return fmt.Sprintf(`{"requestId":"shared-1","imageUrl":%q,"targetWidth":%d,"targetHeight":800,"batchId":"mix"}`, url, w)
	}
	code, _, b := apiDo(t, "POST", f.base+"/v1/crops", "tok-acme-0123456789", body("https://cdn.example.com/a.jpg", 800))
	require.Equal(t, 202, code, "%s", b)
	for _, guess := range []string{body("https://cdn.example.com/a.jpg", 800), body("https://cdn.example.com/b.jpg", 800), body("https://cdn.example.com/a.jpg", 300)} {
		code, _, b := apiDo(t, "POST", f.base+"/v1/crops", "tok-globex-0123456789", guess)
		assert.Equal(t, 409, code, "%s", b)
		var p httpapi.Problem
		require.NoError(t, json.Unmarshal(b, &p))
		assert.Equal(t, "requestId", p.Field, "no field of acme's request is named: %s", b)
		assert.NotContains(t, string(b), "a.jpg")
	}

	for tok, want := range map[string]int{"tok-acme-0123456789": 401, "tok-globex-0123456789": 401, "tok-ops-0123456789": 200} {
		req, err := http.NewRequest("GET", f.base+"/monitoring/api/queues", nil)
		require.NoError(t, err)
		req.SetBasicAuth("x", tok)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode, "web UI with %s", tok)
	}

	code, _, b = apiDo(t, "POST", f.base+"/v1/crops/batch", "tok-acme-0123456789", `{"batchId":"mix","items":[`+
		`{"requestId":"mix-u","imageUrl":"https://cdn.example.com/u.jpg","targetWidth":800,"targetHeight":800,"priority":"urgent"},`+
		`{"requestId":"mix-b","imageUrl":"https://cdn.example.com/b.jpg","targetWidth":800,"targetHeight":800,"priority":"backfill"}]}`)
	require.Equal(t, 202, code, "%s", b)
	code, _, b = apiDo(t, "GET", f.base+"/v1/batches/mix", "tok-acme-0123456789", "")
	require.Equal(t, 200, code, "%s", b)
	assert.Contains(t, string(b), `"priority":"backfill"`, "the batch is as late as its lowest lane")
}
