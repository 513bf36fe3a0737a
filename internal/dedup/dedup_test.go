package dedup_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/tasks"
)

func TestCanonicalURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://CDN.Example.com/a/B.jpg", "https://cdn.example.com/a/B.jpg"},
		{"HTTPS://cdn.example.com:443/a.jpg", "https://cdn.example.com/a.jpg"},
		{"http://cdn.example.com:80/a.jpg", "http://cdn.example.com/a.jpg"},
		{"http://cdn.example.com:8080/a.jpg", "http://cdn.example.com:8080/a.jpg"},
		{"https://cdn.example.com:80/a.jpg", "https://cdn.example.com:80/a.jpg"}, // not https's default
		{"https://cdn.example.com/a.jpg#main", "https://cdn.example.com/a.jpg"},
		{"https://cdn.example.com/a.jpg?w=1&h=2", "https://cdn.example.com/a.jpg?w=1&h=2"},
		{"https://cdn.example.com/a.jpg?h=2&w=1", "https://cdn.example.com/a.jpg?h=2&w=1"}, // the query is the server's to read
		{"https://cdn.example.com/A%2Fb.jpg", "https://cdn.example.com/A%2Fb.jpg"},
		{"https://cdn.example.com?x=1", "https://cdn.example.com?x=1"},
		{"https://User:Pw@CDN.example.com/a.jpg", "https://User:Pw@cdn.example.com/a.jpg"},
		{"http://[::1]:80/a.jpg", "http://[::1]/a.jpg"},
		{"http://[::1]/a.jpg", "http://[::1]/a.jpg"},
	} {
		got, err := dedup.CanonicalURL(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
	_, err := dedup.CanonicalURL("cdn.example.com/a.jpg")
	assert.Error(t, err, "a relative URL has no canonical form")
}

func payload(mut func(*tasks.CropPayload)) tasks.CropPayload {
	p := tasks.CropPayload{Version: tasks.PayloadVersion, Request: tasks.Request{RequestID: "r1", ImageURL: "https://cdn.example.com/a.jpg",
		Params: tasks.Params{TargetWidth: 800, TargetHeight: 600}}}
	if mut != nil {
		mut(&p)
	}
	return p
}

func TestKeyNamesWhatTheResultDependsOn(t *testing.T) {
	ctx := context.Background()
	img := []byte("the same image bytes")
	sum := sha256.Sum256(img)
	no := false
	yes := true
	tenant := dedup.Keyer{Scope: dedup.ScopeTenant, Variant: "https://api.example"}
	global := dedup.Keyer{Scope: dedup.ScopeGlobal, Variant: "https://api.example"}
	base := payload(nil)
	key := func(k dedup.Keyer, p tasks.CropPayload) string {
		t.Helper()
		s, err := k.Key(ctx, p)
		require.NoError(t, err)
		return s
	}
	b := key(tenant, base)
	require.NotEmpty(t, b)
	for _, tc := range []struct {
		name string
		k    dedup.Keyer
		p    tasks.CropPayload
		same bool
	}{
		{"another request id", tenant, payload(func(p *tasks.CropPayload) { p.RequestID = "r2" }), true},
		{"another spelling of the URL", tenant, payload(func(p *tasks.CropPayload) { p.ImageURL = "HTTPS://CDN.example.com:443/a.jpg#x" }), true},
		{"another destination", tenant, payload(func(p *tasks.CropPayload) { p.Bucket, p.KeyTemplate = "other", "x/{requestId}.{ext}" }), true},
		{"dedup: true is the fleet's setting", tenant, payload(func(p *tasks.CropPayload) { p.Dedup = &yes }), true},
		{"another path case", tenant, payload(func(p *tasks.CropPayload) { p.ImageURL = "https://cdn.example.com/A.jpg" }), false},
		{"another width", tenant, payload(func(p *tasks.CropPayload) { p.TargetWidth = 801 }), false},
		{"another height", tenant, payload(func(p *tasks.CropPayload) { p.TargetHeight = 601 }), false},
		{"another tenant", tenant, payload(func(p *tasks.CropPayload) { p.Tenant = "acme" }), false},
		{"another API endpoint", dedup.Keyer{Scope: dedup.ScopeTenant, Variant: "https://cn-api.example"}, base, false},
	} {
		assert.Equal(t, tc.same, key(tc.k, tc.p) == b, tc.name)
	}
	// Global scope: tenants share keys.
	assert.Equal(t, key(global, base), key(global, payload(func(p *tasks.CropPayload) { p.Tenant = "acme" })))

	// Bytes: base64 and a claim check of the same image share a key.
	inline := payload(func(p *tasks.CropPayload) { p.ImageURL, p.ImageBase64 = "", base64.StdEncoding.EncodeToString(img) })
	claim := payload(func(p *tasks.CropPayload) {
		p.ImageURL, p.Input = "", &tasks.InputRef{Bucket: "in", Key: "inputs/x", Size: int64(len(img)), SHA256: hex.EncodeToString(sum[:])}
	})
	assert.Equal(t, key(tenant, inline), key(tenant, claim))
	assert.NotEqual(t, key(tenant, inline), b)

	// Off, or opted out: no key.
	assert.Empty(t, key(dedup.Keyer{Scope: dedup.ScopeOff}, base))
	assert.Empty(t, key(tenant, payload(func(p *tasks.CropPayload) { p.Dedup = &no })))
}

func TestFetchKeysURLsByTheirBytes(t *testing.T) {
	ctx := context.Background()
	img := []byte("one image under two names")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a.jpg", "/b.jpg":
			_, _ = w.Write(img)
		case "/big.jpg":
			_, _ = w.Write(make([]byte, 2048))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	sum := sha256.Sum256(img)
	k := dedup.Keyer{Scope: dedup.ScopeTenant, Fetch: dedup.NewFetcher(dedup.FetchConfig{AllowPrivate: true, MaxBytes: 1024})}
	at := func(path string) tasks.CropPayload {
		return payload(func(p *tasks.CropPayload) { p.ImageURL = srv.URL + path })
	}
	a, err := k.Key(ctx, at("/a.jpg"))
	require.NoError(t, err)
	b, err := k.Key(ctx, at("/b.jpg"))
	require.NoError(t, err)
	inline, err := k.Key(ctx, payload(func(p *tasks.CropPayload) { p.ImageURL, p.ImageBase64 = "", base64.StdEncoding.EncodeToString(img) }))
	require.NoError(t, err)
	assert.Equal(t, a, b, "two URLs of the same bytes")
	assert.Equal(t, a, inline, "a URL and base64 of the same bytes")
	claim, err := k.Key(ctx, payload(func(p *tasks.CropPayload) {
		p.ImageURL, p.Input = "", &tasks.InputRef{Bucket: "in", Key: "k", Size: 1, SHA256: hex.EncodeToString(sum[:])}
	}))
	require.NoError(t, err)
	assert.Equal(t, a, claim)

	// Over the cap, missing: keyed by the URL, with the reason.
	for _, path := range []string{"/big.jpg", "/missing.jpg"} {
		got, err := k.Key(ctx, at(path))
		assert.Error(t, err, path)
		want, _ := dedup.Keyer{Scope: dedup.ScopeTenant}.Key(ctx, at(path))
		assert.Equal(t, want, got, path)
	}
	// Loopback refused unless allowed, when the connection is made.
	guarded := dedup.Keyer{Scope: dedup.ScopeTenant, Fetch: dedup.NewFetcher(dedup.FetchConfig{})}
	_, err = guarded.Key(ctx, at("/a.jpg"))
	assert.ErrorContains(t, err, "not allowed")
}

func newIndex(t *testing.T, cfg dedup.Config) (*dedup.Index, *redis.Client) {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return dedup.New(rdb, cfg), rdb
}

func TestIndexRemembersForgetsAndExpires(t *testing.T) {
	ctx := context.Background()
	x, rdb := newIndex(t, dedup.Config{TTL: time.Hour})
	res := dedup.Result{RequestID: "sku-1", Bucket: "b", Key: "crops/sku-1/800x600.png", ETag: "0123abcd", ContentType: "image/png",
		Size: 12345, Width: 800, Height: 600, APIRequestID: "api-1", At: time.UnixMilli(1_700_000_000_123), Tenant: "acme"}
	_, found, err := x.Lookup(ctx, "k")
	require.NoError(t, err)
	assert.False(t, found)
	require.NoError(t, x.Remember(ctx, "k", res))
	got, found, err := x.Lookup(ctx, "k")
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, res.At.UnixMilli(), got.At.UnixMilli())
	got.At = res.At
	assert.Equal(t, res, got)
	ttl, err := rdb.PTTL(ctx, x.EntryKey("k")).Result()
	require.NoError(t, err)
	assert.InDelta(t, time.Hour.Seconds(), ttl.Seconds(), 5)

	// Forget removes the entry only while it names that request.
	require.NoError(t, x.Forget(ctx, "k", "sku-2"))
	_, found, _ = x.Lookup(ctx, "k")
	assert.True(t, found, "another request's entry is kept")
	require.NoError(t, x.Forget(ctx, "k", "sku"))
	_, found, _ = x.Lookup(ctx, "k")
	assert.True(t, found, "a prefix of the request id is not the request")
	require.NoError(t, x.Forget(ctx, "k", "sku-1"))
	_, found, _ = x.Lookup(ctx, "k")
	assert.False(t, found)

	require.NoError(t, x.CountSaved(ctx, "reused"))
	require.NoError(t, x.CountSaved(ctx, "reused"))
	require.NoError(t, x.CountSaved(ctx, "coalesced"))
	saved, err := x.Saved(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"reused": 2, "coalesced": 1}, saved)
}

// An entry names its payer's tenant; one written before it did (ten
// fields) still reads, its tenant unknown: foreign to every tenant unless
// keys are each tenant's own.
func TestIndexKnowsWhoseResultItIs(t *testing.T) {
	ctx := context.Background()
	x, rdb := newIndex(t, dedup.Config{Keyer: dedup.Keyer{Scope: dedup.ScopeGlobal}})
	require.NoError(t, x.Remember(ctx, "new", dedup.Result{RequestID: "a-1", Bucket: "b", Key: "k", At: time.UnixMilli(1), Tenant: "acme"}))
	got, found, err := x.Lookup(ctx, "new")
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, "acme", got.Tenant)
	assert.False(t, x.Foreign(got, "acme"))
	assert.True(t, x.Foreign(got, "globex"))
	assert.True(t, x.Foreign(got, "default"))

	old := strings.Join([]string{"g-1", "b", "crops/g-1/800x600.png", "etag", "image/png", "10", "800", "600", "api-9", "1700000000000"}, "\x1f")
	require.NoError(t, rdb.Set(ctx, x.EntryKey("old"), old, 0).Err())
	got, found, err = x.Lookup(ctx, "old")
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, dedup.Result{RequestID: "g-1", Bucket: "b", Key: "crops/g-1/800x600.png", ETag: "etag", ContentType: "image/png",
		Size: 10, Width: 800, Height: 600, APIRequestID: "api-9", At: time.UnixMilli(1_700_000_000_000)}, got)
	assert.True(t, x.Foreign(got, "default"), "global scope: an unknown tenant is foreign")
	assert.False(t, dedup.Keyer{Scope: dedup.ScopeTenant}.Foreign(got, "acme"), "tenant scope: the key was the tenant's own")
}

// A reference stands for a request without telling anything of it; the
// index resolves it again (for an operator) until its TTL.
func TestConcealAndResolve(t *testing.T) {
	ctx := context.Background()
	x, rdb := newIndex(t, dedup.Config{TTL: time.Hour})
	ref, err := x.Conceal(ctx, "acme-secret-sku-1")
	require.NoError(t, err)
	assert.Regexp(t, `^ref/[0-9a-f]{20}$`, ref)
	assert.NotContains(t, ref, "acme")
	assert.True(t, dedup.IsRef(ref))
	assert.NoError(t, tasks.ValidateRequestID(strings.TrimPrefix(ref, "ref/")))
	assert.Error(t, tasks.ValidateRequestID(ref), "never taken for a request id")
	again, err := x.Conceal(ctx, "acme-secret-sku-1")
	require.NoError(t, err)
	assert.NotEqual(t, ref, again, "two references to one request cannot be matched")

	id, found, err := x.Resolve(ctx, ref)
	require.NoError(t, err)
	assert.True(t, found)
	assert.Equal(t, "acme-secret-sku-1", id)
	keys, err := rdb.Keys(ctx, "*"+ref+"*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	ttl, err := rdb.PTTL(ctx, keys[0]).Result()
	require.NoError(t, err)
	assert.InDelta(t, time.Hour.Seconds(), ttl.Seconds(), 5)

	for _, unknown := range []string{"ref/00000000000000000000", "sku-1", "ref/xyz", ""} {
		_, found, err := x.Resolve(ctx, unknown)
		require.NoError(t, err)
		assert.False(t, found, unknown)
	}
}

func TestClaimIsOneHoldersAndExpiresWithoutRenewal(t *testing.T) {
	ctx := context.Background()
	x, rdb := newIndex(t, dedup.Config{ClaimTTL: 600 * time.Millisecond})
	a, holder, err := x.Acquire(ctx, "k", "req-a")
	require.NoError(t, err)
	require.NotNil(t, a)
	assert.Empty(t, holder)
	b, holder, err := x.Acquire(ctx, "k", "req-b")
	require.NoError(t, err)
	assert.Nil(t, b)
	assert.Equal(t, "req-a", holder)

	// Renewed while held: still held after several claim lifetimes.
	time.Sleep(1800 * time.Millisecond) // the elapsed time itself is under test, not a wait for a condition
	_, holder, err = x.Acquire(ctx, "k", "req-b")
	require.NoError(t, err)
	assert.Equal(t, "req-a", holder, "the holder renews its claim")

	a.Release(ctx)
	a.Release(ctx) // idempotent
	b, _, err = x.Acquire(ctx, "k", "req-b")
	require.NoError(t, err)
	require.NotNil(t, b, "released: the next takes it")

	// A holder that stops renewing (its worker died): the claim expires.
	require.NoError(t, rdb.Set(ctx, rediskey.Default.DedupClaim("dead"), "req-dead/00", 600*time.Millisecond).Err())
	require.Eventually(t, func() bool {
		l, _, err := x.Acquire(ctx, "dead", "req-c")
		if l != nil {
			l.Release(ctx)
		}
		return err == nil && l != nil
	}, 3*time.Second, 20*time.Millisecond)
	b.Release(ctx)
}

// TestIndexBytesPerEntry measures what the index costs in Redis (the
// README's figure): MEMORY USAGE of typical entries.
func TestIndexBytesPerEntry(t *testing.T) {
	ctx := context.Background()
	x, rdb := newIndex(t, dedup.Config{})
	k := dedup.Keyer{Scope: dedup.ScopeTenant, Variant: "https://api.aidc-ai.com"}
	const n = 1000
	var total int64
	for i := range n {
		p := payload(func(p *tasks.CropPayload) {
			p.RequestID = fmt.Sprintf("sku-%07d-main", i)
			p.ImageURL = fmt.Sprintf("https://cdn.example.com/catalogue/sku-%07d.jpg", i)
		})
		key, err := k.Key(ctx, p)
		require.NoError(t, err)
		require.NoError(t, x.Remember(ctx, key, dedup.Result{RequestID: p.RequestID, Bucket: "product-crops",
			Key: "crops/" + p.RequestID + "/800x600.jpg", ETag: "9b2cf535f27731c974343645a3985328", ContentType: "image/jpeg",
			Size: 183_422, Width: 800, Height: 600, APIRequestID: "0bb0a3c217331245b7e5d9ea1", At: time.Now(), Tenant: "default"}))
		used, err := rdb.MemoryUsage(ctx, x.EntryKey(key)).Result()
		require.NoError(t, err)
		total += used
	}
	perEntry := float64(total) / n
	t.Logf("dedup index: %.0f bytes per entry (MEMORY USAGE, mean of %d)", perEntry, n)
	assert.Greater(t, perEntry, 100.0)
	assert.Less(t, perEntry, 400.0, "an entry is one compact string key")
}
