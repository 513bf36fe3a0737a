package results_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/image/bmp"

	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/testenv"
)

func encode(t testing.TB, format string, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x * 7), uint8(y * 3), uint8(x ^ y), 255})
		}
	}
	var buf bytes.Buffer
	switch format {
	case "png":
		require.NoError(t, png.Encode(&buf, img))
	case "bmp":
		require.NoError(t, bmp.Encode(&buf, img))
	}
	return buf.Bytes()
}

type env struct {
	copier *results.Copier
	s3     *s3.Client
	bucket string
}

func newEnv(t *testing.T, mutate ...func(*results.Config)) env {
	t.Helper()
	m := testenv.MinIO(t)
	client, bucket := testenv.MinIOBucket(t, m)
	cfg := results.Config{Bucket: bucket, Timeout: 30 * time.Second, ResultHosts: []string{"127.0.0.1"}, AllowHTTP: true}
	for _, f := range mutate {
		f(&cfg)
	}
	c, err := results.New(client, cfg)
	require.NoError(t, err)
	return env{copier: c, s3: client, bucket: bucket}
}

func (e env) keys(t *testing.T) []string {
	t.Helper()
	out, err := e.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(e.bucket)})
	require.NoError(t, err)
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	uploads, err := e.s3.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(e.bucket)})
	require.NoError(t, err)
	for _, u := range uploads.Uploads {
		keys = append(keys, "multipart:"+aws.ToString(u.Key))
	}
	return keys
}

func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func bytesHandler(ctype string, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	}
}

func TestCopy(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	small := encode(t, "png", 300, 200)
	large := encode(t, "bmp", 2600, 1000) // ~7.8 MB: multipart
	require.Greater(t, len(large), 5<<20)

	tests := []struct {
		name    string
		handler http.HandlerFunc
		obj     results.Object
		key     string
		ctype   string
		size    int
	}{
		{"small png", bytesHandler("image/png", small), results.Object{RequestID: "r-small", APIRequestID: "api-1", Width: 300, Height: 200}, "crops/r-small/300x200.png", "image/png", len(small)},
		{"no content type is sniffed", bytesHandler("", small), results.Object{RequestID: "r-sniff", Width: 300, Height: 200}, "crops/r-sniff/300x200.png", "image/png", len(small)},
		{"octet-stream is sniffed", bytesHandler("application/octet-stream", small), results.Object{RequestID: "r-octet"}, "crops/r-octet/0x0.png", "image/png", len(small)},
		{"large goes multipart", bytesHandler("image/bmp", large), results.Object{RequestID: "r-large", Width: 2600, Height: 1000}, "crops/r-large/2600x1000.bmp", "image/bmp", len(large)},
		{"chunked (unknown length)", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			for i := 0; i < len(small); i += 1000 {
				_, _ = w.Write(small[i:min(i+1000, len(small))])
				w.(http.Flusher).Flush()
			}
		}, results.Object{RequestID: "r-chunked", Width: 300, Height: 200}, "crops/r-chunked/300x200.png", "image/png", len(small)},
		{"hostile request id stays in its prefix", bytesHandler("image/png", small), results.Object{RequestID: "../../etc/passwd"}, "crops/..%2F..%2Fetc%2Fpasswd/0x0.png", "image/png", len(small)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := e.copier.Copy(ctx, serve(t, tt.handler)+"/r.png?Expires=9999999999&Signature=x", tt.obj)
			require.NoError(t, err)
			assert.Equal(t, tt.key, st.Key)
			assert.Equal(t, tt.ctype, st.ContentType)
			assert.Equal(t, int64(tt.size), st.Size)
			assert.NotEmpty(t, st.ETag)

			got, err := e.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(tt.key)})
			require.NoError(t, err)
			defer got.Body.Close()
			b, err := io.ReadAll(got.Body)
			require.NoError(t, err)
			assert.Equal(t, tt.size, len(b))
			assert.Equal(t, tt.ctype, aws.ToString(got.ContentType))
			assert.Equal(t, tt.obj.RequestID, got.Metadata["request-id"])
		})
	}
}

func TestCopyMetadata(t *testing.T) {
	e := newEnv(t, func(c *results.Config) { c.KeyTemplate = "out/{date}/{requestId}.{ext}" })
	small := encode(t, "png", 120, 100)
	st, err := e.copier.Copy(context.Background(), serve(t, bytesHandler("image/png", small)),
		results.Object{RequestID: "m1", APIRequestID: "api-9", Width: 120, Height: 100, Metadata: map[string]string{"sku": "A-1"}})
	require.NoError(t, err)
	assert.Regexp(t, `^out/\d{4}-\d{2}-\d{2}/m1\.png$`, st.Key)
	head, err := e.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(st.Key)})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"request-id": "m1", "api-request-id": "api-9", "width": "120", "height": "100", "sku": "A-1"}, head.Metadata)
}

func TestCopyRefusesAndLeavesNothing(t *testing.T) {
	small := encode(t, "png", 300, 200)
	large := encode(t, "bmp", 2600, 1000)
	truncate := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		obj     results.Object
		expired bool
		status  int
		errText string
	}{
		{"html", bytesHandler("text/html", []byte("<html>nope</html>")), results.Object{RequestID: "x"}, false, 200, "not an accepted image type"},
		{"403 means expired", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) }, results.Object{RequestID: "x"}, true, 403, "expired"},
		{"404", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) }, results.Object{RequestID: "x"}, false, 404, "HTTP 404"},
		{"truncated small", truncate(small), results.Object{RequestID: "x"}, false, 200, "truncated"},
		{"truncated large", truncate(large), results.Object{RequestID: "x"}, false, 200, "truncated"},
		{"wrong size", bytesHandler("image/png", small), results.Object{RequestID: "x", Width: 800, Height: 800}, false, 200, "is 300×200, want 800×800"},
		{"oversize", bytesHandler("image/bmp", large), results.Object{RequestID: "x"}, false, 200, "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *results.Config) {
				if tt.name == "oversize" {
					c.MaxDownloadBytes = 1 << 20
				}
			})
			_, err := e.copier.Copy(context.Background(), serve(t, tt.handler)+"/r.png", tt.obj)
			var se *results.SourceError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.expired, se.Expired)
			assert.Equal(t, tt.status, se.StatusCode)
			assert.Contains(t, err.Error(), tt.errText)
			assert.Empty(t, e.keys(t), "a refused copy leaves nothing behind")
		})
	}
}

// Expires is on the vendor's clock: whatever this clock says of it, the
// download is tried, and only the result host's 403 means expired.
func TestCopyTrustsTheResultHostNotTheClock(t *testing.T) {
	e := newEnv(t)
	img := encode(t, "png", 200, 100)
	fetched := 0
	live := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		fetched++
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(img)
	})
	// Long past by this clock, still live by the vendor's.
	st, err := e.copier.Copy(context.Background(), live+"/r.png?Expires=1000&Signature=s", results.Object{RequestID: "x", Width: 200, Height: 100})
	require.NoError(t, err)
	assert.Equal(t, 1, fetched)
	assert.Equal(t, int64(len(img)), st.Size)

	gone := serve(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) })
	_, err = e.copier.Copy(context.Background(), gone+"/r.png?Expires=99999999999&Signature=s", results.Object{RequestID: "y"})
	var se *results.SourceError
	require.ErrorAs(t, err, &se)
	assert.True(t, se.Expired, "the result host's refusal is what expired means")
	assert.NotContains(t, err.Error(), "Signature", "the signature is not repeated in errors")
}

func TestUploadErrorWhenS3IsDown(t *testing.T) {
	m := testenv.MinIO(t)
	client, bucket := testenv.MinIOBucket(t, m)
	c, err := results.New(client, results.Config{Bucket: bucket, Timeout: 10 * time.Second, ResultHosts: []string{"127.0.0.1"}, AllowHTTP: true})
	require.NoError(t, err)
	require.NoError(t, m.Stop(context.Background()))

	_, err = c.Copy(context.Background(), serve(t, bytesHandler("image/png", encode(t, "png", 120, 100))), results.Object{RequestID: "down"})
	var ue *results.UploadError
	require.ErrorAs(t, err, &ue)
	assert.Error(t, c.CheckBucket(context.Background()))
	require.NoError(t, m.Start(context.Background()))
	assert.NoError(t, c.CheckBucket(context.Background()))
}

// Results are fetched only from allowed hosts, over https unless allowed,
// and a redirect is checked like the first URL.
func TestResultHostAllowList(t *testing.T) {
	m := testenv.MinIO(t)
	client, bucket := testenv.MinIOBucket(t, m)
	pngData := encode(t, "png", 200, 100)
	var redirected atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/r.png", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(pngData)
	})
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:1/elsewhere.png", http.StatusFound)
	})
	mux.HandleFunc("/elsewhere.png", func(http.ResponseWriter, *http.Request) { redirected.Add(1) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	cases := []struct {
		name   string
		cfg    results.Config
		path   string
		reason string // "" = stored
	}{
		{"allowed host over http in dev", results.Config{ResultHosts: []string{"127.0.0.1"}, AllowHTTP: true}, "/r.png", ""},
		{"http refused by default", results.Config{ResultHosts: []string{"127.0.0.1"}}, "/r.png", "only https"},
		{"host not allowed", results.Config{ResultHosts: []string{"*.aliyuncs.com"}, AllowHTTP: true}, "/r.png", "not in the allowed result hosts"},
		{"default is the vendor's domains", results.Config{AllowHTTP: true}, "/r.png", `"127.0.0.1" is not in the allowed result hosts [*.aliyuncs.com]`},
		{"redirect off the list", results.Config{ResultHosts: []string{"127.0.0.1"}, AllowHTTP: true}, "/away", "localhost"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Bucket, cfg.Timeout = bucket, 10*time.Second
			c, err := results.New(client, cfg)
			require.NoError(t, err)
			_, err = c.Copy(context.Background(), srv.URL+tc.path+"?Signature=secret", results.Object{RequestID: "h-" + strings.ReplaceAll(tc.name, " ", "-")})
			if tc.reason == "" {
				require.NoError(t, err)
				return
			}
			var he *results.HostError
			require.ErrorAs(t, err, &he)
			assert.Contains(t, err.Error(), tc.reason)
			assert.NotContains(t, err.Error(), "secret", "the query is never shown")
		})
	}
	assert.Zero(t, redirected.Load(), "the redirect target was never fetched")
}
