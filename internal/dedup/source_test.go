package dedup_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/dedup"
)

// origin serves one image whose bytes a test replaces, with the
// validators of its mode: "etag" (ETag and Last-Modified, 304s),
// "date" (Last-Modified only) or "none".
type origin struct {
	mu    sync.Mutex
	body  string
	mod   string
	mode  string
	conds int // conditional requests seen
}

func (o *origin) set(body, mod string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.body, o.mod = body, mod
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	etag := `"` + o.body + `"`
	if r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" {
		o.conds++
	}
	switch o.mode {
	case "etag":
		w.Header().Set("ETag", etag)
		w.Header().Set("Last-Modified", o.mod)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	case "date":
		w.Header().Set("Last-Modified", o.mod)
		if r.Header.Get("If-Modified-Since") == o.mod {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	_, _ = w.Write([]byte(o.body))
}

func TestRevalidate(t *testing.T) {
	const d1, d2 = "Sun, 06 Dec 2026 05:00:00 GMT", "Sun, 06 Dec 2026 05:10:00 GMT"
	for _, c := range []struct {
		mode    string
		outcome string // of the revalidation of an unchanged and a changed image
		changed string
	}{
		{"etag", dedup.OutcomeUnchanged, dedup.OutcomeChanged},
		{"date", dedup.OutcomeUnchanged, dedup.OutcomeChanged},
		{"none", dedup.OutcomeNoValidator, dedup.OutcomeNoValidator},
	} {
		t.Run(c.mode, func(t *testing.T) {
			o := &origin{mode: c.mode}
			o.set("photo-1", d1)
			srv := httptest.NewServer(o)
			t.Cleanup(srv.Close)
			f := dedup.NewFetcher(dedup.FetchConfig{AllowPrivate: true})
			ctx := context.Background()

			v, err := f.Validators(ctx, srv.URL+"/main.png")
			require.NoError(t, err)
			if c.mode == "none" {
				assert.NotEmpty(t, v.Digest, "no validator: the bytes' digest is recorded")
			} else {
				assert.Empty(t, v.Digest, "validators: nothing downloaded to hash")
			}

			chk, err := f.Revalidate(ctx, srv.URL+"/main.png", v)
			require.NoError(t, err)
			assert.True(t, chk.Unchanged)
			assert.Equal(t, c.outcome, chk.Outcome)
			if c.mode != "none" {
				assert.Equal(t, 1, o.conds, "a conditional request")
			}

			o.set("photo-2", d2) // replaced behind the same URL
			chk, err = f.Revalidate(ctx, srv.URL+"/main.png", v)
			require.NoError(t, err)
			assert.False(t, chk.Unchanged)
			assert.Equal(t, c.changed, chk.Outcome)
		})
	}
}

func TestRevalidateWithoutAnythingKnownIsChanged(t *testing.T) {
	f := dedup.NewFetcher(dedup.FetchConfig{AllowPrivate: true})
	// No request is made: an address that answers nothing would fail.
	chk, err := f.Revalidate(context.Background(), "http://127.0.0.1:1/x.png", dedup.Validators{})
	require.NoError(t, err)
	assert.False(t, chk.Unchanged)
	assert.Equal(t, dedup.OutcomeChanged, chk.Outcome)
}

func TestRevalidateRefusesPrivateAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("ETag", `"a"`) }))
	t.Cleanup(srv.Close)
	f := dedup.NewFetcher(dedup.FetchConfig{})
	chk, err := f.Revalidate(context.Background(), srv.URL+"/x.png", dedup.Validators{ETag: `"a"`})
	require.Error(t, err, "the fetch's address rules hold")
	assert.False(t, chk.Unchanged)
}

func TestParseSourceMode(t *testing.T) {
	for in, want := range map[string]dedup.SourceMode{"": dedup.SourceValidators, "validators": dedup.SourceValidators,
		"bytes": dedup.SourceBytes, "url": dedup.SourceURL} {
		got, err := dedup.ParseSourceMode(in)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := dedup.ParseSourceMode("etag")
	assert.Error(t, err)
}
