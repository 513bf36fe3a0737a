package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/tasks"
)

// frontDoor is a stack with a running `cropq api` and no worker, so that
// what was accepted stays queued for inspection.
type frontDoor struct {
	*stack
	base string
}

const frontDoorToken = "door-token-0123456789"

func newFrontDoor(t *testing.T, env ...string) frontDoor {
	t.Helper()
	s := newStack(t, stackOptions{})
	apiAddr := freeAddr(t)
	s.env = append(s.env, "CROPQ_API_TOKENS="+frontDoorToken, "CROPQ_API_ADDR="+apiAddr, "CROPQ_ALLOW_PRIVATE_IMAGE_URLS=false")
	s.env = append(s.env, env...)
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")
	return frontDoor{stack: s, base: base}
}

func (f frontDoor) post(t *testing.T, path, body string) (int, []byte) {
	t.Helper()
	code, _, b := apiDo(t, http.MethodPost, f.base+path, frontDoorToken, body)
	return code, b
}

// queued lists the request ids that have a status record, and those waiting
// in the backlog or as asynq tasks.
func (f frontDoor) queued(t *testing.T) (records, waiting []string) {
	t.Helper()
	ctx := context.Background()
	keys, err := f.rdb.Keys(ctx, rediskey.Default.StatusPattern()).Result()
	require.NoError(t, err)
	for _, k := range keys {
		id, _ := rediskey.Default.RequestIDOf(k)
		records = append(records, id)
	}
	return records, waitingIDs(t, f.rdb)
}

// waitingIDs lists the request ids in the backlog and in asynq's pending list.
func waitingIDs(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	members, err := rdb.SMembers(ctx, rediskey.Default.BacklogActive()).Result()
	require.NoError(t, err)
	for _, m := range members {
		lane, tenant, _ := strings.Cut(m, ":") // backlog.Member
		entries, err := rdb.LRange(ctx, rediskey.Default.Backlog(lane, tenant), 0, -1).Result()
		require.NoError(t, err)
		for _, e := range entries {
			head, _, _ := strings.Cut(e, "\n")
			_, id, _ := strings.Cut(head, " ")
			ids = append(ids, id)
		}
	}
	infos, err := asynq.NewInspectorFromRedisClient(rdb).ListPendingTasks(tasks.DefaultQueue, asynq.PageSize(1000))
	if err == nil {
		for _, in := range infos {
			ids = append(ids, in.ID)
		}
	}
	return ids
}

// The same request id submitted again with any parameter changed is a
// conflict naming that parameter, through the HTTP API, the CLI and bulk
// files alike; with every parameter the same it is known.
func TestIdempotencyCoversEveryParameter(t *testing.T) {
	f := newFrontDoor(t)
	base := map[string]any{"requestId": "idem-1", "imageUrl": "https://cdn.example.com/a.jpg", "targetWidth": 800, "targetHeight": 600,
		"bucket": "cropq-other", "keyTemplate": "shop/{requestId}.{ext}", "metadata": map[string]string{"sku": "A-1"},
		"batchId": "idem-batch", "callbackUrl": "https://hooks.example.com/cropq"}
	body := func(change map[string]any) string {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range change {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return string(b)
	}
	code, b := f.post(t, "/v1/crops", body(nil))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	var first httpapi.ItemResult
	require.NoError(t, json.Unmarshal(b, &first))
	require.NotNil(t, first.Status)
	assert.Equal(t, "cropq-other", first.Status.Bucket, "the record keeps the destination")
	assert.Equal(t, "shop/{requestId}.{ext}", first.Status.KeyTemplate)
	assert.Equal(t, map[string]string{"sku": "A-1"}, first.Status.Metadata)

	code, b = f.post(t, "/v1/crops", body(nil))
	assert.Equal(t, http.StatusOK, code, "identical: known: %s", b)

	cases := []struct {
		field  string
		change map[string]any
	}{
		{"imageUrl", map[string]any{"imageUrl": "https://cdn.example.com/b.jpg"}},
		{"targetWidth", map[string]any{"targetWidth": 801}},
		{"targetHeight", map[string]any{"targetHeight": 601}},
		{"bucket", map[string]any{"bucket": "cropq-third"}},
		{"bucket", map[string]any{"bucket": nil}},
		{"keyTemplate", map[string]any{"keyTemplate": "shop/{requestId}/{width}.{ext}"}},
		{"metadata", map[string]any{"metadata": map[string]string{"sku": "A-2"}}},
		{"metadata", map[string]any{"metadata": nil}},
		{"batchId", map[string]any{"batchId": "other-batch"}},
		{"callbackUrl", map[string]any{"callbackUrl": "https://hooks.example.com/other"}},
		{"dedup", map[string]any{"dedup": false}},
	}
	for _, tc := range cases {
		code, b := f.post(t, "/v1/crops", body(tc.change))
		assert.Equal(t, http.StatusConflict, code, "%v: %s", tc.change, b)
		var p httpapi.Problem
		require.NoError(t, json.Unmarshal(b, &p))
		assert.Equal(t, tc.field, p.Field, "%v: %s", tc.change, b)
	}

	// dedup true is the fleet's setting: the same request as none.
	code, b = f.post(t, "/v1/crops", body(map[string]any{"dedup": true}))
	assert.Equal(t, http.StatusOK, code, "dedup true: known: %s", b)

	// The CLI and a bulk file reach the same decision.
	_, err := f.cropq("enqueue", "--request-id", "idem-1", "--url", "https://cdn.example.com/a.jpg", "--width", "800", "--height", "600",
		"--bucket", "cropq-other", "--key-template", "shop/{requestId}.{ext}", "--metadata", "sku=A-1", "--batch", "idem-batch",
		"--callback-url", "https://hooks.example.com/cropq", "--dedup=false")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dedup")
	optOut := filepath.Join(t.TempDir(), "optout.csv")
	require.NoError(t, os.WriteFile(optOut, []byte("requestId,imageUrl,targetWidth,targetHeight,bucket,keyTemplate,metadata,batchId,callbackUrl,dedup\n"+
		`idem-1,https://cdn.example.com/a.jpg,800,600,cropq-other,shop/{requestId}.{ext},"{""sku"":""A-1""}",idem-batch,https://hooks.example.com/cropq,false`+"\n"), 0o644))
	out, err := f.cropq("enqueue", "--file", optOut, "--no-progress")
	require.Error(t, err, out)
	assert.Contains(t, err.Error(), "dedup")
	_, err = f.cropq("enqueue", "--request-id", "idem-1", "--url", "https://cdn.example.com/a.jpg", "--width", "800", "--height", "600",
		"--bucket", "cropq-other", "--key-template", "shop/{requestId}.{ext}", "--metadata", "sku=A-9", "--batch", "idem-batch",
		"--callback-url", "https://hooks.example.com/cropq")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "metadata")
	out, err = f.cropq("enqueue", "--request-id", "idem-1", "--url", "https://cdn.example.com/a.jpg", "--width", "800", "--height", "600",
		"--bucket", "cropq-other", "--key-template", "shop/{requestId}.{ext}", "--metadata", "sku=A-1", "--batch", "idem-batch",
		"--callback-url", "https://hooks.example.com/cropq")
	require.NoError(t, err)
	assert.Contains(t, out, "already known")
	csv := filepath.Join(t.TempDir(), "rows.csv")
	require.NoError(t, os.WriteFile(csv, []byte("requestId,imageUrl,targetWidth,targetHeight,bucket,keyTemplate,metadata,batchId,callbackUrl\n"+
		`idem-1,https://cdn.example.com/a.jpg,800,600,cropq-other,shop/{requestId}.{ext},"{""sku"":""A-1""}",idem-batch,https://hooks.example.com/cropq`+"\n"+
		`idem-1,https://cdn.example.com/a.jpg,800,600,cropq-other,shop/{requestId}/x.{ext},"{""sku"":""A-1""}",idem-batch,https://hooks.example.com/cropq`+"\n"), 0o644))
	out, err = f.cropq("enqueue", "--file", csv, "--no-progress")
	require.Error(t, err, out)
	assert.Contains(t, out, "1 already known")
	assert.Contains(t, out, "1 conflict")
	assert.Contains(t, err.Error(), "keyTemplate")

	records, taskIDs := f.queued(t)
	assert.Equal(t, []string{"idem-1"}, records)
	assert.Equal(t, []string{"idem-1"}, taskIDs)
}

// Items of a batch follow one rule: whatever is wrong with an item (a
// wrong type, an unknown field, a value out of range) refuses that item
// alone; what is wrong with the batch refuses it whole. The same id twice
// in one batch is enqueued once, every time.
func TestBatchAnswersOneWay(t *testing.T) {
	f := newFrontDoor(t)
	item := func(id string, extra string) string {
		return `{"requestId":"` + id + `","imageUrl":"https://cdn.example.com/` + id + `.jpg","targetWidth":800,"targetHeight":800` + extra + `}`
	}
	batch := `{"batchId":"mixed","items":[` + strings.Join([]string{
		item("m-ok-1", ""),
		`{"requestId":"m-type","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":"abc","targetHeight":800}`,
		item("m-range", `,"targetHeight":99999`),
		item("m-unknown", `,"colour":"red"`),
		item("m-case", `,"KeyTemplate":"x/{requestId}"`),
		item("m-key", `,"keyTemplate":"../{requestId}.{ext}"`),
		item("m-ok-2", ""),
		item("m-surrogate", `,"metadata":{"a":"\ud800"}`),
	}, ",") + `]}`
	code, b := f.post(t, "/v1/crops/batch", batch)
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	var resp httpapi.BatchResponse
	require.NoError(t, json.Unmarshal(b, &resp))
	require.Len(t, resp.Results, 8)
	want := []struct{ outcome, field string }{
		{"enqueued", ""}, {"invalid", "targetWidth"}, {"invalid", "targetHeight"}, {"invalid", "colour"},
		{"invalid", "KeyTemplate"}, {"invalid", "keyTemplate"}, {"enqueued", ""}, {"invalid", "metadata.a"},
	}
	for i, w := range want {
		r := resp.Results[i]
		assert.Equal(t, w.outcome, r.Outcome, "item %d: %+v", i, r)
		if w.field != "" && assert.NotNil(t, r.Error, "item %d", i) {
			assert.Equal(t, w.field, r.Error.Field, "item %d", i)
			for _, leak := range []string{"httpapi.", "tasks.", "Go struct", "Go value", "of type", "a int"} {
				assert.NotContains(t, r.Error.Detail, leak, "no Go type names")
			}
			assert.True(t, strings.HasPrefix(r.Error.Type, "https://cropq.dev/problems/"))
		}
	}
	assert.Equal(t, "m-type", resp.Results[1].RequestID, "an item of the wrong type still names its id")

	// The batch itself at fault: refused whole.
	for _, tc := range []struct{ name, body, field string }{
		{"bad batchId", `{"batchId":"a/b","items":[` + item("w-1", "") + `]}`, "batchId"},
		{"unknown member", `{"batch":"b","items":[` + item("w-2", "") + `]}`, "batch"},
		{"items not an array", `{"items":{}}`, "items"},
		{"no items", `{"items":[]}`, "items"},
		{"malformed", `{"items":[` + item("w-3", ""), ""},
		{"trailing value", `{"items":[` + item("w-4", "") + `]} []`, ""},
	} {
		code, b := f.post(t, "/v1/crops/batch", tc.body)
		assert.Equal(t, http.StatusBadRequest, code, "%s: %s", tc.name, b)
		var p httpapi.Problem
		require.NoError(t, json.Unmarshal(b, &p))
		assert.Equal(t, tc.field, p.Field, "%s: %s", tc.name, b)
	}

	// The same id twice: exactly one enqueued, every time.
	for i := range 20 {
		id := fmt.Sprintf("twin-%d", i)
		code, b := f.post(t, "/v1/crops/batch", `{"items":[`+item(id, "")+`,`+item(id, "")+`,`+strings.Replace(item(id, ""), "800", "900", 1)+`]}`)
		require.Equal(t, http.StatusAccepted, code, "%s", b)
		var resp httpapi.BatchResponse
		require.NoError(t, json.Unmarshal(b, &resp))
		assert.Equal(t, map[string]int{"enqueued": 1, "known": 1, "conflict": 1}, resp.Counts, "try %d: %s", i, b)
		assert.Equal(t, "enqueued", resp.Results[0].Outcome)
		assert.Equal(t, "targetWidth", resp.Results[2].Error.Field)
	}

	records, taskIDs := f.queued(t)
	assert.Len(t, records, 22)
	assert.Len(t, taskIDs, 22)
	assert.Contains(t, records, "m-ok-2")
	assert.NotContains(t, records, "m-type")
}

// The body must be declared JSON: application/json, with parameters.
func TestContentTypeMustBeJSON(t *testing.T) {
	f := newFrontDoor(t)
	body := `{"requestId":"ct-%d","imageUrl":"https://cdn.example.com/a.jpg","targetWidth":800,"targetHeight":800}`
	for i, tc := range []struct {
		ctype string
		code  int
	}{
		{"application/json", 202},
		{"application/json; charset=utf-8", 202},
		{"Application/JSON", 202},
		{"application/json; charset=UTF-8", 202},
		{"application/json; charset=utf-16", 415},
		{"application/x-www-form-urlencoded", 415},
		{"application/jsonx", 415},
		{"application/json-seq", 415},
		{"text/plain", 415},
		{"", 415},
	} {
		req, err := http.NewRequest(http.MethodPost, f.base+"/v1/crops", strings.NewReader(fmt.Sprintf(body, i)))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+frontDoorToken)
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, tc.code, resp.StatusCode, "%q", tc.ctype)
	}
	records, _ := f.queued(t)
	assert.ElementsMatch(t, []string{"ct-0", "ct-1", "ct-2", "ct-3"}, records)
}

// procKB reads a field of /proc/PID/status in kB.
func procKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var n int64
			_, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &n)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// Many maximal bodies at once cannot take the API's memory: bodies beyond
// CROPQ_API_MAX_INFLIGHT_BYTES wait their turn (or get 503), so the peak
// RSS grows by a bounded multiple of that budget, not of the bodies sent.
func TestAPIMemoryIsBoundedUnderMaximalBodies(t *testing.T) {
	const (
		bodyMax  = 4 << 20
		inflight = 8 << 20
		n        = 24 // 96 MiB offered at once
	)
	s := newStack(t, stackOptions{})
	apiAddr := freeAddr(t)
	s.env = append(s.env, "CROPQ_API_TOKENS="+frontDoorToken, "CROPQ_API_ADDR="+apiAddr,
		fmt.Sprintf("CROPQ_API_MAX_BODY_BYTES=%d", bodyMax), fmt.Sprintf("CROPQ_API_MAX_INFLIGHT_BYTES=%d", inflight))
	cmd := s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")

	// A valid image header and padding: the largest base64 image that fits.
	img := append(bombPNG(800, 800), make([]byte, (bodyMax-1024)/4*3-100)...)
	b64 := base64.StdEncoding.EncodeToString(img)
	before := procKB(t, cmd.Process.Pid, "VmRSS")
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"requestId":"mem-%d","imageBase64":%q,"targetWidth":800,"targetHeight":800}`, i, b64)
			req, err := http.NewRequest(http.MethodPost, base+"/v1/crops", strings.NewReader(body))
			if err != nil {
				return
			}
			req.Header.Set("Authorization", "Bearer "+frontDoorToken)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			codes[i] = resp.StatusCode
			_ = resp.Body.Close()
		}()
	}
	wg.Wait()
	peak := procKB(t, cmd.Process.Pid, "VmHWM")
	growth := (peak - before) << 10
	accepted := 0
	for _, c := range codes {
		assert.Contains(t, []int{http.StatusAccepted, http.StatusServiceUnavailable}, c)
		if c == http.StatusAccepted {
			accepted++
		}
	}
	t.Logf("%d × %d MiB bodies at once, budget %d MiB: %d accepted, peak RSS growth %d MiB", n, bodyMax>>20, inflight>>20, accepted, growth>>20)
	assert.Positive(t, accepted)
	// About 3 copies of each body in flight, and as much again for the
	// garbage collector's headroom: well under the 2–3 × 96 MiB the same
	// bodies took when all were read at once.
	assert.Less(t, growth, int64(8*inflight), "peak RSS growth")
	records, _ := (frontDoor{stack: s, base: base}).queued(t)
	assert.Len(t, records, accepted, "every accepted body has its record, and no other")
}
