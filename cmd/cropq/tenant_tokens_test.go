package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/webhook"
)

// A malformed CROPQ_API_TOKENS entry stops a real `cropq api` at start-up,
// naming the entry's position and never its token; before, a mistyped
// tenant ("ACME:…") made its token a bare one of the default tenant, an
// operator's. The stack is up, so an API that took the entry would listen.
func TestMalformedTokenEntryStopsTheAPI(t *testing.T) {
	s := newStack(t, stackOptions{})
	const (
		secret = "s3cr3t-SECRET-0123456789"
		opsTok = "ops-token-0123456789"
	)
	for _, tc := range []struct {
		name, entry, want string
	}{
		{"upper-case tenant", "ACME:" + secret, "not a tenant name"},
		{"tenant with ~", "ac~me:" + secret, "not a tenant name"},
		{"tenant with a space", "glo bex:" + secret, "not a tenant name"},
		{"non-ASCII tenant", "acmé:" + secret, "not a tenant name"},
		{"empty token", "acme:", "token is empty"},
		{"short token", "acme:SECRET-short", "token must be at least 16 characters"},
		{"token of two tenants", "acme:" + opsTok, "a token belongs to one tenant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := freeAddr(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, s.bin, "api", "--addr", addr)
			cmd.Env = append(append(os.Environ(), s.env...), "CROPQ_API_TOKENS="+opsTok+","+tc.entry+",globex:globex-token-0123456789")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			require.Error(t, err, "cropq api must not start: %s", out.String())
			require.NoError(t, ctx.Err(), "cropq api kept running: %s", out.String())
			msg := out.String()
			assert.Contains(t, msg, "CROPQ_API_TOKENS")
			assert.Contains(t, msg, "entry 2: ")
			assert.Contains(t, msg, tc.want)
			for _, tok := range []string{secret, "SECRET", opsTok} {
				assert.NotContains(t, msg, tok, "the error never quotes a token")
			}
			assert.NotContains(t, msg, "listening")
		})
	}
}

// httpGet answers url's status and body, with a bearer token when one is given.
func httpGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// The API's /metrics name tenants and their backlogs: on the API's port,
// which tenants reach, they answer only an operator's token (none: 401, a
// tenant's: 403); the cluster's scraper reads them without a token on
// CROPQ_API_METRICS_ADDR. Probes need no token and name no tenant. Start-up
// logs each tenant's number of tokens, never a token.
func TestAPIMetricsAreTheOperatorsOnly(t *testing.T) {
	const (
		tokA   = "acme-token-0123456789"
		tokG   = "globex-token-0123456789"
		tokI   = "initech-token-0123456789"
		tokOps = "ops-token-0123456789"
	)
	metricsAddr := freeAddr(t)
	f := newFrontDoor(t, "CROPQ_API_TOKENS=acme:"+tokA+",globex:"+tokG+",initech:"+tokI+","+tokOps+",acme:"+tokA+"-2",
		"CROPQ_API_METRICS_ADDR="+metricsAddr, "CROPQ_TENANT_WEIGHTS=acme=2,globex=1")
	scraper := "http://" + metricsAddr
	f.awaitHTTP(scraper + "/healthz")

	// Backlogs of a weighted tenant and of one without a weight.
	for tok, id := range map[string]string{tokA: "wall-a1", tokI: "wall-i1"} {
		code, _, b := apiDo(t, http.MethodPost, f.base+"/v1/crops", tok,
			fmt.Sprintf(`{"requestId":%q,"imageUrl":"https://cdn.example.com/%s.jpg","targetWidth":800,"targetHeight":800}`, id, id))
		require.Equal(t, http.StatusAccepted, code, "%s", b)
	}

	code, body := httpGet(t, f.base+"/metrics", "")
	assert.Equal(t, http.StatusUnauthorized, code, "no token")
	assert.NotContains(t, body, "cropq_backlog")
	for _, tok := range []string{tokA, tokG} {
		code, body = httpGet(t, f.base+"/metrics", tok)
		assert.Equal(t, http.StatusForbidden, code, "a tenant's token")
		assert.NotContains(t, body, "cropq_backlog")
	}
	code, body = httpGet(t, f.base+"/metrics", tokOps)
	assert.Equal(t, http.StatusOK, code, "an operator's token")
	assert.Contains(t, body, `cropq_backlog_requests{lane="normal",tenant="acme"} 1`)

	m := scrape(t, scraper+"/metrics") // no token
	assert.Equal(t, 1.0, m["cropq_backlog_requests{lane=normal,tenant=acme}"])
	assert.Equal(t, 1.0, m["cropq_backlog_requests{lane=normal,tenant=~other}"], "a tenant without a weight is not named")
	for k := range m {
		assert.NotContains(t, k, "initech", "tenant labels stay bounded to CROPQ_TENANT_WEIGHTS")
	}

	// Probes: no token, and nothing of any tenant.
	for _, u := range []string{f.base + "/healthz", f.base + "/readyz", scraper + "/readyz"} {
		code, body := httpGet(t, u, "")
		assert.Equal(t, http.StatusOK, code, u)
		for _, tenant := range []string{"acme", "globex", "initech"} {
			assert.NotContains(t, body, tenant, u)
		}
	}
	// The scraper's port serves nothing else: no API, no web UIs.
	for _, path := range []string{"/v1/crops/wall-a1", "/ui/", "/monitoring/"} {
		code, _ := httpGet(t, scraper+path, tokOps)
		assert.Equal(t, http.StatusNotFound, code, path)
	}

	api := f.procs[len(f.procs)-1]
	api.stop()
	logs := api.out.String()
	assert.Contains(t, logs, "tokens_per_tenant=\"acme=2 default=1 globex=1 initech=1\"", "start-up counts each tenant's tokens")
	for _, tok := range []string{tokA, tokG, tokI, tokOps} {
		assert.NotContains(t, logs, tok)
	}
	assert.True(t, strings.Contains(logs, "metrics_addr="+metricsAddr), "%s", logs)
}

// In CROPQ_DEDUP_SCOPE=global, globex reusing acme's stored result learns
// that it was reused, not whose: its record (through the API, the CLI and
// the crops page), its callback and its batch name no acme request, only a
// reference an operator resolves with `cropq status --resolve-ref`. A reuse
// within one tenant still names the request.
func TestCrossTenantReuseNamesNoRequest(t *testing.T) {
	s := newStack(t, stackOptions{})
	const (
		tokA     = "acme-token-0123456789"
		tokG     = "globex-token-0123456789"
		secret   = "whsec-walls-0123"
		acmeID   = "acme-private-sku-77"
		acmeTwin = "acme-sku-78"
		globexID = "globex-sku-1"
	)
	hooks := make(chan []byte, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secret), r.Header, body, time.Minute, time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		hooks <- body
	}))
	t.Cleanup(receiver.Close)
	apiAddr := freeAddr(t)
	base := "http://" + apiAddr
	s.env = append(s.env, "CROPQ_DEDUP_SCOPE=global", "CROPQ_API_TOKENS=acme:"+tokA+",globex:"+tokG, "CROPQ_API_ADDR="+apiAddr,
		"CROPQ_WEBHOOK_SECRET="+secret, "CROPQ_WEBHOOK_ALLOW=127.0.0.0/8")
	s.start("api", "api")
	s.awaitHTTP(base + "/healthz")
	s.startWorker()
	crop := func(id, extra string) string {
		return fmt.Sprintf(`{"requestId":%q,"imageUrl":%q,"targetWidth":300,"targetHeight":300%s}`, id, s.images+"/"+firstImage(t), extra)
	}
	const wait = 60 * time.Second

	code, _, b := apiDo(t, http.MethodPost, base+"/v1/crops", tokA, crop(acmeID, ""))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	paid := s.stored(t, acmeID, wait)
	require.Equal(t, 1, paid.PaidCalls)

	code, _, b = apiDo(t, http.MethodPost, base+"/v1/crops", tokG, crop(globexID, `,"batchId":"g-batch","callbackUrl":"`+receiver.URL+`/hook"`))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	reused := s.stored(t, globexID, wait)
	assert.Zero(t, reused.PaidCalls, "reused across tenants")
	assert.True(t, dedup.IsRef(reused.ReusedFrom), "reusedFrom %q", reused.ReusedFrom)

	// Everything globex can read of its request.
	var seen strings.Builder
	code, _, b = apiDo(t, http.MethodGet, base+"/v1/crops/"+globexID, tokG, "")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, string(b), `"reusedFrom":"`+reused.ReusedFrom+`"`, "it says it was reused")
	seen.Write(b)
	code, _, b = apiDo(t, http.MethodGet, base+"/v1/batches/g-batch", tokG, "")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, string(b), `"saved":1`)
	seen.Write(b)
	for _, path := range []string{"/ui/crops/" + globexID, "/ui/batches/g-batch", "/ui/"} {
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		require.NoError(t, err)
		req.SetBasicAuth("globex", tokG)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		seen.Write(page)
	}
	select {
	case hook := <-hooks:
		assert.Contains(t, string(hook), globexID)
		seen.Write(hook)
	case <-time.After(wait):
		t.Fatal("no callback within 60s")
	}
	assert.NotContains(t, seen.String(), acmeID, "nothing globex reads names acme's request")

	// An operator resolves the reference.
	out, err := s.cropq("status", "--resolve-ref", reused.ReusedFrom)
	require.NoError(t, err)
	assert.Equal(t, acmeID+"\n", out)

	// Within acme, a reuse names the request, as before.
	code, _, b = apiDo(t, http.MethodPost, base+"/v1/crops", tokA, crop(acmeTwin, ""))
	require.Equal(t, http.StatusAccepted, code, "%s", b)
	own := s.stored(t, acmeTwin, wait)
	assert.Zero(t, own.PaidCalls)
	assert.Equal(t, acmeID, own.ReusedFrom)
}
