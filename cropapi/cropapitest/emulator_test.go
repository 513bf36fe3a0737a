package cropapitest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/cropapitest"
)

const (
	appKey    = "test-key"
	appSecret = "test-secret"
)

// clock is a settable time source shared by the emulator and the client.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock               { return &clock{t: time.Now()} }
func imagesDir() string              { return filepath.Join("..", "..", "testdata", "images") }
func readImage(t *testing.T, n string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(imagesDir(), n))
	require.NoError(t, err)
	return b
}

type rig struct {
	emu    *cropapitest.Server
	api    *httptest.Server
	images *httptest.Server
	client *cropapi.Client
	clock  *clock
}

func newRig(t *testing.T, cfg cropapitest.Config) *rig {
	t.Helper()
	clk := newClock()
	cfg.AppKey, cfg.AppSecret = appKey, appSecret
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	emu, err := cropapitest.New(cfg)
	require.NoError(t, err)
	api := httptest.NewServer(emu)
	t.Cleanup(api.Close)
	images := httptest.NewServer(http.FileServer(http.Dir(imagesDir())))
	t.Cleanup(images.Close)
	client, err := cropapi.NewClient(cropapi.Config{BaseURL: api.URL, AppKey: appKey, AppSecret: appSecret, Timeout: 30 * time.Second, Now: clk.Now, Limits: cropapi.Limits{AllowPrivateHosts: true}})
	require.NoError(t, err)
	return &rig{emu: emu, api: api, images: images, client: client, clock: clk}
}

func download(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

func TestCropToExactSize(t *testing.T) {
	r := newRig(t, cropapitest.Config{})
	cases := []struct {
		name, file string
		byBase64   bool
		w, h       int
		wantType   string
	}{
		{"jpeg by url", "ball-offcentre.jpg", false, 800, 800, "image/jpeg"},
		{"jpeg by base64", "ball-offcentre.jpg", true, 800, 800, "image/jpeg"},
		{"png by url, wide target", "mug-square.png", false, 1200, 400, "image/png"},
		{"png by base64, upscaled", "bottle-tall.png", true, 700, 1400, "image/png"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := cropapi.Request{TargetWidth: tc.w, TargetHeight: tc.h}
			if tc.byBase64 {
				req.ImageBase64 = base64.StdEncoding.EncodeToString(readImage(t, tc.file))
			} else {
				req.ImageURL = r.images.URL + "/" + tc.file
			}
			res, err := r.client.Crop(context.Background(), req)
			require.NoError(t, err)
			assert.Equal(t, tc.w, res.Width)
			assert.Equal(t, tc.h, res.Height)
			assert.Equal(t, 1, res.Usage)
			assert.NotEmpty(t, res.RequestID)
			assert.True(t, res.ExpiresAt.After(r.clock.Now()), "result URL carries its expiry")
			assert.True(t, strings.HasPrefix(res.ImageURL, r.api.URL+"/oss/"), "result served where the emulator was reached: %s", res.ImageURL)

			resp, body := download(t, res.ImageURL)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, tc.wantType, resp.Header.Get("Content-Type"))
			cfg, _, err := image.DecodeConfig(bytes.NewReader(body))
			require.NoError(t, err)
			assert.Equal(t, tc.w, cfg.Width)
			assert.Equal(t, tc.h, cfg.Height)
		})
	}
}

// The ball sits right of centre (x 800–1100 of 1200). A centre square crop
// (x 200–1000) would cut a third of it; a content-aware one keeps it whole.
func TestCropKeepsSalientObject(t *testing.T) {
	r := newRig(t, cropapitest.Config{})
	src, _, err := image.Decode(bytes.NewReader(readImage(t, "ball-offcentre.jpg")))
	require.NoError(t, err)
	total := countRed(src, src.Bounds())
	centre := countRed(src, image.Rect(200, 0, 1000, 800))
	require.Less(t, float64(centre), 0.8*float64(total), "the sample must punish a centre crop")

	res, err := r.client.Crop(context.Background(), cropapi.Request{ImageURL: r.images.URL + "/ball-offcentre.jpg", TargetWidth: 800, TargetHeight: 800})
	require.NoError(t, err)
	_, body := download(t, res.ImageURL)
	out, _, err := image.Decode(bytes.NewReader(body))
	require.NoError(t, err)
	// 800 px of height map to 800: the ball keeps its area when fully in frame.
	assert.GreaterOrEqual(t, float64(countRed(out, out.Bounds())), 0.97*float64(total))
}

func countRed(img image.Image, r image.Rectangle) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if cr>>8 > 120 && cg>>8 < 80 && cb>>8 < 80 {
				n++
			}
		}
	}
	return n
}

// Every answer the protocol page lists, through the real HTTP path, and how
// the client classifies it.
func TestErrorsThroughHTTP(t *testing.T) {
	small := pngOf(t, 60, 60) // under the 100 px minimum for URL images
	cases := []struct {
		name      string
		cfg       cropapitest.Config
		clientCfg func(*cropapi.Config)
		url       string // relative to the image server unless absolute
		calls     int    // calls to make; the last is checked
		wantCode  string
		wantClass cropapi.Class
	}{
		{name: "500 system error", cfg: cropapitest.Config{Faults: cropapitest.Faults{P500: 1}}, wantCode: "500", wantClass: cropapi.ClassRetryable},
		{name: "501 quota", cfg: cropapitest.Config{Rate: 0.001, Burst: 1}, calls: 2, wantCode: "501", wantClass: cropapi.ClassRateLimited},
		{name: "429 quota at the gateway", cfg: cropapitest.Config{Rate: 0.001, Burst: 1, RateLimit429: true}, calls: 2, wantCode: "http_429", wantClass: cropapi.ClassRateLimited},
		{name: "700 image too small", url: "/small.png", wantCode: "700", wantClass: cropapi.ClassPermanent},
		{name: "801 model failed", cfg: cropapitest.Config{Faults: cropapitest.Faults{P801: 1}}, wantCode: "801", wantClass: cropapi.ClassRetryable},
		{name: "900 injected", cfg: cropapitest.Config{Faults: cropapitest.Faults{P900: 1}}, wantCode: "900", wantClass: cropapi.ClassRetryable},
		{name: "900 source not found", url: "/missing.jpg", wantCode: "900", wantClass: cropapi.ClassRetryable},
		{name: "1000 sensitive", url: "/sensitive/ball-offcentre.jpg", wantCode: "1000", wantClass: cropapi.ClassPermanent},
		{name: "1001 content control", cfg: cropapitest.Config{Faults: cropapitest.Faults{P1001: 1}}, wantCode: "1001", wantClass: cropapi.ClassRetryable},
		{name: "1002 risk filter", cfg: cropapitest.Config{Faults: cropapitest.Faults{P1002: 1}}, wantCode: "1002", wantClass: cropapi.ClassPermanent},
		{name: "wrong secret", clientCfg: func(c *cropapi.Config) { c.AppSecret = "nope" }, wantCode: "IncompleteSignature", wantClass: cropapi.ClassPermanent},
		{name: "unknown app key", clientCfg: func(c *cropapi.Config) { c.AppKey = "nope" }, wantCode: "InvalidAppKey", wantClass: cropapi.ClassPermanent},
		{name: "stale timestamp", clientCfg: func(c *cropapi.Config) { c.Now = func() time.Time { return time.Now().Add(-time.Hour) } }, wantCode: "InvalidTimestamp", wantClass: cropapi.ClassPermanent},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.cfg)
			mux := http.NewServeMux()
			mux.HandleFunc("/small.png", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(small) })
			mux.Handle("/sensitive/", http.StripPrefix("/sensitive", http.FileServer(http.Dir(imagesDir()))))
			mux.Handle("/", http.FileServer(http.Dir(imagesDir())))
			images := httptest.NewServer(mux)
			t.Cleanup(images.Close)

			ccfg := cropapi.Config{BaseURL: r.api.URL, AppKey: appKey, AppSecret: appSecret, Now: r.clock.Now, Limits: cropapi.Limits{AllowPrivateHosts: true}}
			if tc.clientCfg != nil {
				tc.clientCfg(&ccfg)
			}
			client, err := cropapi.NewClient(ccfg)
			require.NoError(t, err)
			url := tc.url
			if url == "" {
				url = "/sensitive/ball-offcentre.jpg"
				if tc.wantCode != "1000" {
					url = "/ball-offcentre.jpg"
				}
			}
			req := cropapi.Request{ImageURL: images.URL + url, TargetWidth: 300, TargetHeight: 300}
			for range max(tc.calls, 1) - 1 {
				_, err := client.Crop(context.Background(), req)
				require.NoError(t, err)
			}
			_, err = client.Crop(context.Background(), req)
			require.Error(t, err)
			assert.Equal(t, tc.wantCode, cropapi.CodeOf(err), "error: %v", err)
			assert.Equal(t, tc.wantClass, cropapi.ClassOf(err), "error: %v", err)
			assert.NotContains(t, err.Error(), appSecret)

			st := r.emu.Stats()
			assert.Zero(t, st.Usage-int64(max(tc.calls, 1)-1), "failed calls are not billed")
			assert.Equal(t, int64(1), st.Calls[tc.wantCode])
			if tc.wantCode == "http_429" {
				d, ok := cropapi.RetryAfterOf(err)
				assert.True(t, ok)
				assert.Equal(t, time.Second, d, "Retry-After honoured")
			}
		})
	}
}

func pngOf(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 200
	}
	img.Set(w/2, h/2, color.Black)
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, img))
	return buf.Bytes()
}

func TestResultURLExpiresAndIsSigned(t *testing.T) {
	r := newRig(t, cropapitest.Config{ResultTTL: 5 * time.Second})
	res, err := r.client.Crop(context.Background(), cropapi.Request{ImageURL: r.images.URL + "/mug-square.png", TargetWidth: 400, TargetHeight: 400})
	require.NoError(t, err)
	assert.WithinDuration(t, r.clock.Now().Add(5*time.Second), res.ExpiresAt, time.Second)

	resp, _ := download(t, res.ImageURL)
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// A forged expiry does not extend the lifetime.
	forged := strings.Replace(res.ImageURL, "Expires=", "Expires=9", 1)
	resp, body := download(t, forged)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Contains(t, string(body), "SignatureDoesNotMatch")

	r.clock.Add(6 * time.Second)
	resp, body = download(t, res.ImageURL)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Contains(t, string(body), "<Code>AccessDenied</Code>")

	st := r.emu.Stats()
	assert.Equal(t, int64(1), st.Downloads)
	assert.Equal(t, int64(2), st.DownloadsExpired)
}

func TestTruncatedDownload(t *testing.T) {
	r := newRig(t, cropapitest.Config{Faults: cropapitest.Faults{PTruncate: 1}})
	res, err := r.client.Crop(context.Background(), cropapi.Request{ImageURL: r.images.URL + "/ball-offcentre.jpg", TargetWidth: 500, TargetHeight: 500})
	require.NoError(t, err)
	resp, err := http.Get(res.ImageURL)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Equal(t, int64(1), r.emu.Stats().DownloadsTruncated)
}

func TestControlEndpoints(t *testing.T) {
	r := newRig(t, cropapitest.Config{})
	_, err := r.client.Crop(context.Background(), cropapi.Request{ImageURL: r.images.URL + "/mug-square.png", TargetWidth: 300, TargetHeight: 300})
	require.NoError(t, err)

	var st cropapitest.Stats
	getJSON(t, http.MethodGet, r.api.URL+"/_emulator/stats", nil, &st)
	assert.Equal(t, int64(1), st.Calls["200"])
	assert.Equal(t, int64(1), st.Usage)
	assert.Equal(t, 1, st.StoredResults)
	assert.Positive(t, st.StoredBytes)

	var f cropapitest.Faults
	getJSON(t, http.MethodPut, r.api.URL+"/_emulator/faults", strings.NewReader(`{"p500":1}`), &f)
	assert.InDelta(t, 1.0, f.P500, 0)
	_, err = r.client.Crop(context.Background(), cropapi.Request{ImageURL: r.images.URL + "/mug-square.png", TargetWidth: 300, TargetHeight: 300})
	assert.Equal(t, "500", cropapi.CodeOf(err))

	var after cropapitest.Stats
	getJSON(t, http.MethodPost, r.api.URL+"/_emulator/reset", nil, &after)
	assert.Empty(t, after.Calls)
	assert.Zero(t, after.Usage)

	req, err := http.NewRequest(http.MethodPut, r.api.URL+"/_emulator/faults", strings.NewReader(`{"p5000":1}`))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "an unknown fault is refused, not ignored")
}

func getJSON(t *testing.T, method, url string, body io.Reader, v any) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

// Results are bounded in memory; the oldest go first.
func TestResultStoreEvictsOldest(t *testing.T) {
	r := newRig(t, cropapitest.Config{MaxStoredBytes: 1})
	var urls []string
	for range 2 {
		res, err := r.client.Crop(context.Background(), cropapi.Request{ImageURL: r.images.URL + "/mug-square.png", TargetWidth: 300, TargetHeight: 300})
		require.NoError(t, err)
		urls = append(urls, res.ImageURL)
	}
	resp, _ := download(t, urls[0])
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = download(t, urls[1])
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, 1, r.emu.Stats().StoredResults)

}

// The crop memo changes the cost, not the answer, nor the billing.
func TestCropCacheGivesSameResultAndBills(t *testing.T) {
	r := newRig(t, cropapitest.Config{CropCache: 2})
	var bodies [][]byte
	for range 2 {
		res, err := r.client.Crop(context.Background(), cropapi.Request{ImageURL: r.images.URL + "/mug-square.png", TargetWidth: 300, TargetHeight: 300})
		require.NoError(t, err)
		_, b := download(t, res.ImageURL)
		bodies = append(bodies, b)
	}
	assert.Equal(t, bodies[0], bodies[1])
	assert.Equal(t, int64(2), r.emu.Stats().Usage)
}
