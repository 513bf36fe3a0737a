package main

import (
	"bytes"
	"context"
	"fmt"
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

	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/tasks"
)

// The nightly re-sync (CROPQ_DEDUP_SOURCE) through real processes: cropq
// workers, the emulator, redis-server and MinIO, and an image origin whose
// photos the test replaces behind the same URL.

// photoOrigin serves photos by path. With validators it sends an ETag
// (the bytes' length and a version) and Last-Modified, and answers
// conditional requests with 304; without, neither.
type photoOrigin struct {
	mu         sync.Mutex
	photos     map[string][]byte
	version    map[string]int
	validators bool
}

func newPhotoOrigin(t *testing.T, validators bool) (*photoOrigin, string) {
	o := &photoOrigin{photos: map[string][]byte{}, version: map[string]int{}, validators: validators}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	return o, srv.URL
}

// put places the sample image name behind path (a new version of it).
func (o *photoOrigin) put(t *testing.T, path, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "images", name))
	require.NoError(t, err)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.photos[path] = b
	o.version[path]++
}

func (o *photoOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	b, ok := o.photos[r.URL.Path]
	v := o.version[r.URL.Path]
	o.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if o.validators {
		etag := fmt.Sprintf(`"v%d-%d"`, v, len(b))
		// A date per version, a minute apart: replaced within the same
		// second, a date alone could not tell.
		mod := time.Date(2026, 12, 1, 0, v, 0, 0, time.UTC).Format(http.TimeFormat)
		w.Header().Set("ETag", etag)
		w.Header().Set("Last-Modified", mod)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Header().Set("Content-Type", "image/png")
	_, _ = w.Write(b)
}

// freshCrop is what the emulator makes of the image behind url now: a
// request that opts out of reuse, at its own key.
func freshCrop(t *testing.T, s *stack, prod *producer.Producer, url, id string) []byte {
	t.Helper()
	no := false
	submit(t, prod, tasks.Request{RequestID: id, ImageURL: url, Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}, Dedup: &no})
	rec := s.stored(t, id, 60*time.Second)
	require.Equal(t, 1, rec.PaidCalls)
	return s.objectBytes(t, rec.Stored.Key)
}

func TestE2EResyncReplacedImage(t *testing.T) {
	for _, c := range []struct {
		mode       string
		validators bool // the origin's
		repaid     bool // a replaced image is paid for again
		metric     string
	}{
		{"validators", true, true, "unchanged"},
		{"validators-origin-without-validators", false, true, "no_validator"},
		{"bytes", true, true, ""},
		{"url", true, false, ""},
	} {
		t.Run(c.mode, func(t *testing.T) {
			s, prod := dedupStack(t, "tenant")
			mode, _, _ := strings.Cut(c.mode, "-")
			addr := freeAddr(t)
			s.startWorker("CROPQ_DEDUP_SOURCE="+mode, "CROPQ_WORKER_ADDR="+addr)
			s.awaitHTTP("http://" + addr + "/healthz")
			origin, base := newPhotoOrigin(t, c.validators)
			origin.put(t, "/sku-1/main.png", "mug-square.png")
			url := base + "/sku-1/main.png"
			// The catalogue's fixed destination: the same key every night.
			line := func(id string) tasks.Request {
				return tasks.Request{RequestID: id, ImageURL: url, Params: tasks.Params{TargetWidth: 300, TargetHeight: 300, BatchID: "night-" + id,
					KeyTemplate: "catalog/sku-1/main-{width}x{height}.{ext}"}}
			}
			const wait = 60 * time.Second

			// Night 1: paid.
			submit(t, prod, line("n1"))
			n1 := s.stored(t, "n1", wait)
			require.Equal(t, 1, n1.PaidCalls)
			old := s.objectBytes(t, n1.Stored.Key)

			// Night 2, nothing changed: nothing to do.
			submit(t, prod, line("n2"))
			n2 := s.stored(t, "n2", wait)
			assert.True(t, n2.Unchanged, "the destination already holds this crop")
			assert.Zero(t, n2.PaidCalls)
			assert.Equal(t, "n1", n2.ReusedFrom)
			assert.Equal(t, n1.Stored.Key, n2.Stored.Key)
			assert.Equal(t, n1.Stored.ETag, n2.Stored.ETag, "not written again")
			bi, err := prod.Batch(context.Background(), "", "night-n2")
			require.NoError(t, err)
			assert.Equal(t, int64(1), bi.Unchanged)
			assert.Equal(t, int64(1), bi.Saved)
			assert.Equal(t, int64(1), s.stats().Usage)
			out, err := s.cropq("wait", "--batch", "night-n2")
			require.NoError(t, err)
			assert.Contains(t, out, "1 paid calls saved (1 unchanged at their destination)")
			if c.mode == "validators" {
				// The same through the HTTP API.
				const token = "resync-token-0123456789"
				apiAddr := freeAddr(t)
				saved := s.env
				s.env = append(append([]string{}, s.env...), "CROPQ_API_TOKENS="+token, "CROPQ_API_ADDR="+apiAddr)
				s.start("api", "api")
				s.env = saved
				s.awaitHTTP("http://" + apiAddr + "/healthz")
				code, _, b := apiDo(t, http.MethodGet, "http://"+apiAddr+"/v1/batches/night-n2", token, "")
				require.Equal(t, http.StatusOK, code, "%s", b)
				assert.Contains(t, string(b), `"unchanged":1`)
				code, _, b = apiDo(t, http.MethodGet, "http://"+apiAddr+"/v1/crops/n2", token, "")
				require.Equal(t, http.StatusOK, code, "%s", b)
				assert.Contains(t, string(b), `"unchanged":true`)
			}

			// The seller replaces the photo behind the same URL.
			origin.put(t, "/sku-1/main.png", "bottle-tall.png")
			submit(t, prod, line("n3"))
			n3 := s.stored(t, "n3", wait)
			got := s.objectBytes(t, n3.Stored.Key)
			assert.Equal(t, n1.Stored.Key, n3.Stored.Key, "the same destination")
			if c.repaid {
				assert.Equal(t, 1, n3.PaidCalls, "a changed image is paid for again")
				assert.False(t, n3.Unchanged)
				assert.False(t, bytes.Equal(old, got), "the old crop was replaced")
				// Not stale: the stored object is the crop of the current image.
				assert.True(t, bytes.Equal(freshCrop(t, s, prod, url, "fresh-n3"), got), "the crop of the current image")
				// Night 4: the new photo unchanged, nothing to do again.
				submit(t, prod, line("n4"))
				n4 := s.stored(t, "n4", wait)
				assert.True(t, n4.Unchanged)
				assert.Equal(t, "n3", n4.ReusedFrom)
				assert.Equal(t, int64(3), s.stats().Usage, "n1, n3 and the fresh crop")
			} else {
				// url mode trusts the URL's text: the old crop stands. This
				// is why it is only for immutable, content-addressed URLs.
				assert.Zero(t, n3.PaidCalls)
				assert.True(t, bytes.Equal(old, got), "url mode keeps the stale crop (documented)")
				assert.Equal(t, int64(1), s.stats().Usage)
			}

			if c.metric != "" {
				m := scrape(t, "http://"+addr+"/metrics")
				assert.Positive(t, m["cropq_dedup_revalidations_total{outcome="+c.metric+"}"], "%v", revalidations(m))
				if c.validators {
					assert.Positive(t, m["cropq_dedup_revalidations_total{outcome=changed}"], "%v", revalidations(m))
				}
				assert.Positive(t, m["cropq_api_calls_saved_total{reason=unchanged}"])
			}
		})
	}
}

func revalidations(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, "cropq_dedup_revalidation") {
			out[k] = v
		}
	}
	return out
}
