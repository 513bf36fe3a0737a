package cropapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi/internal/wire"
)

const (
	testKey    = "app-key-123"
	testSecret = "top-secret-value-xyz"
)

func newTestClient(t *testing.T, h http.HandlerFunc, mutate ...func(*Config)) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := Config{BaseURL: srv.URL, AppKey: testKey, AppSecret: testSecret, Timeout: 2 * time.Second}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := NewClient(cfg)
	require.NoError(t, err)
	return c
}

func TestCropWireFormat(t *testing.T) {
	sample, err := os.ReadFile("testdata/sample_response.json")
	require.NoError(t, err)
	img := b64(encodeImage(t, "png", 600, 600))
	now := time.UnixMilli(1719233941145)

	var got struct {
		method, path string
		query        map[string]string
		trial, ctype string
		body         map[string]any
	}
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path = r.Method, r.URL.Path
		got.query = map[string]string{}
		for k := range r.URL.Query() {
			got.query[k] = r.URL.Query().Get(k)
		}
		got.trial, got.ctype = r.Header.Get("x-iop-trial"), r.Header.Get("Content-Type")
		require.NoError(t, json.NewDecoder(r.Body).Decode(&got.body))
		_, _ = w.Write(sample)
	}, func(c *Config) { c.Trial = true; c.Now = func() time.Time { return now } })

	res, err := c.Crop(context.Background(), Request{ImageURL: "https://e.com/a.jpg", ImageBase64: img, TargetWidth: 800, TargetHeight: 600})
	require.NoError(t, err)
	assert.Equal(t, 1000, res.Width)

	assert.Equal(t, http.MethodPost, got.method)
	assert.Equal(t, "/rest/ai/image/cropping", got.path)
	assert.Equal(t, map[string]string{
		"partner_id": "aidge", "sign_method": "sha256", "sign_ver": "v2", "app_key": testKey,
		"timestamp": "1719233941145", "sign": wire.Sign(testSecret, "1719233941145"),
	}, got.query)
	assert.Equal(t, "true", got.trial)
	assert.Equal(t, "application/json", got.ctype)
	// Numbers travel as strings; only base64 is sent when both sources are set.
	assert.Equal(t, map[string]any{"imageBase64": img, "targetWidth": "800", "targetHeight": "600"}, got.body)
}

func TestCropNoTrialHeaderByDefault(t *testing.T) {
	sample, err := os.ReadFile("testdata/sample_response.json")
	require.NoError(t, err)
	var trial []string
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		trial = r.Header.Values("x-iop-trial")
		_, _ = w.Write(sample)
	})
	_, err = c.Crop(context.Background(), Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 800, TargetHeight: 800})
	require.NoError(t, err)
	assert.Empty(t, trial)
}

func TestCropValidatesBeforeCalling(t *testing.T) {
	calls := 0
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) { calls++ })
	_, err := c.Crop(context.Background(), Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 99, TargetHeight: 800})
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "targetWidth", ve.Field)
	assert.Zero(t, calls, "a call the API would refuse must not be sent")
}

func TestCropTimeoutAndNoSecretsInErrors(t *testing.T) {
	release := make(chan struct{})
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, func(c *Config) { c.Timeout = 100 * time.Millisecond })
	t.Cleanup(func() { close(release) }) // runs before the server's Close

	_, err := c.Crop(context.Background(), Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 800, TargetHeight: 800})
	require.Error(t, err)
	assert.Equal(t, ClassRetryable, ClassOf(err))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	msg := err.Error()
	assert.NotContains(t, msg, testSecret)
	assert.NotContains(t, msg, "sign=")
	assert.NotContains(t, msg, testKey)
}

func TestCropHonoursContext(t *testing.T) {
	release := make(chan struct{})
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Crop(ctx, Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 800, TargetHeight: 800})
	assert.ErrorIs(t, err, context.Canceled)
}

func TestCropReadsBodyOnErrorStatus(t *testing.T) {
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"type":"ISV","code":"ApiCallLimit","message":"too many calls"}`)
	})
	_, err := c.Crop(context.Background(), Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 800, TargetHeight: 800})
	var te *TransportError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, 429, te.StatusCode)
	assert.Equal(t, 2*time.Second, te.RetryAfter)
	var ge *GatewayError
	require.ErrorAs(t, err, &ge, "the gateway's body is kept")
	assert.Equal(t, "ApiCallLimit", ge.GatewayCode)
	assert.True(t, IsRateLimited(err))
}

func TestCropBodyCap(t *testing.T) {
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"x":"`+strings.Repeat("a", 2048)+`"}`)
	}, func(c *Config) { c.MaxResponseBytes = 1024 })
	_, err := c.Crop(context.Background(), Request{ImageURL: "https://e.com/a.jpg", TargetWidth: 800, TargetHeight: 800})
	var te *TransportError
	require.ErrorAs(t, err, &te)
	assert.Contains(t, te.Error(), "larger than 1024 bytes")
}

func TestNewClientConfig(t *testing.T) {
	_, err := NewClient(Config{AppSecret: "s"})
	assert.ErrorIs(t, err, ErrNoAppKey)
	_, err = NewClient(Config{AppKey: "k"})
	assert.ErrorIs(t, err, ErrNoAppSecret)
	_, err = NewClient(Config{AppKey: "k", AppSecret: "s", BaseURL: "api.example.com"})
	assert.ErrorContains(t, err, "absolute http(s) URL")
	c, err := NewClient(Config{AppKey: "k", AppSecret: "s"})
	require.NoError(t, err)
	assert.Equal(t, DefaultBaseURL+APIPath, c.endpoint)
}
