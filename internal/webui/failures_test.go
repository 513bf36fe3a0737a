package webui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/status"
)

// The failures page groups what failed; operators see every tenant's and
// replay from it, with the page's CSRF token; a tenant sees its own and
// has no button.
func TestFailuresPageAndReplay(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, u := range []records.Update{{To: status.Running, Attempt: 1}, {To: status.Failed, Attempt: 1, ErrorCode: "900", ErrorMessage: "internal url error"}} {
		_, err := f.st.Transition(ctx, "g-1", u)
		require.NoError(t, err)
	}

	code, body, h := f.get(t, "op-tok", "/ui/failures")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `id="failed-total" data-value="2"`)
	assert.Contains(t, body, `<tr data-key="1001">`)
	assert.Contains(t, body, `<tr data-key="globex">`, "operators see tenants")
	assert.Contains(t, body, "cannot decode &lt;img&gt;", "the sample's error, escaped")
	assert.Contains(t, body, `id="replay"`)
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == "cropq_csrf" {
			cookie = c
		}
	}
	require.NotNil(t, cookie, "the page sets its CSRF cookie")
	assert.True(t, cookie.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, cookie.SameSite)
	assert.Contains(t, body, `name="csrf" value="`+cookie.Value+`"`)

	code, body, _ = f.get(t, "op-tok", "/ui/failures?code=900")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `id="failed-total" data-value="1"`)
	code, _, _ = f.get(t, "op-tok", "/ui/failures?batch=a..b")
	assert.Equal(t, http.StatusBadRequest, code)

	code, body, _ = f.get(t, "acme-tok", "/ui/failures?tenant=globex")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `id="failed-total" data-value="1"`, "a tenant sees its own, whatever it asks")
	assert.NotContains(t, body, "internal url error")
	assert.NotContains(t, body, `id="replay"`, "tenants replay through the API and the CLI")

	post := func(token string, form url.Values, withCookie bool) (int, string) {
		req := httptest.NewRequest(http.MethodPost, "/ui/failures/replay", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("someone", token)
		if withCookie {
			req.AddCookie(cookie)
		}
		rec := httptest.NewRecorder()
		f.ui.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	code, _ = post("op-tok", url.Values{"code": {"900"}, "action": {"replay"}}, true)
	assert.Equal(t, http.StatusForbidden, code, "no CSRF token in the form")
	code, _ = post("op-tok", url.Values{"code": {"900"}, "action": {"replay"}, "csrf": {cookie.Value}}, false)
	assert.Equal(t, http.StatusForbidden, code, "no CSRF cookie")
	code, _ = post("acme-tok", url.Values{"action": {"replay"}, "csrf": {cookie.Value}}, true)
	assert.Equal(t, http.StatusForbidden, code, "tenants have no button")

	code, body = post("op-tok", url.Values{"code": {"900"}, "action": {"dry-run"}, "csrf": {cookie.Value}}, true)
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "Dry run: 1 failed requests match")
	rec, err := f.st.Get(ctx, "g-1")
	require.NoError(t, err)
	assert.Equal(t, status.Failed, rec.State)

	code, body = post("op-tok", url.Values{"code": {"900"}, "action": {"replay"}, "csrf": {cookie.Value}}, true)
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "Replayed: 1 of 1 sent again")
	rec, err = f.st.Get(ctx, "g-1")
	require.NoError(t, err)
	assert.Equal(t, status.Queued, rec.State)
	audits, err := f.prod.Replays(ctx, 1)
	require.NoError(t, err)
	require.Len(t, audits, 1)
	assert.Equal(t, "web ui, tenant default", audits[0].By)
	assert.Equal(t, "900", audits[0].Filter.Code)
}
