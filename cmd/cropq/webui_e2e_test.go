package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/localsvc"
	"github.com/cropq/cropq/status"
)

// uiCard is one result of the batch grid as the browser rendered it.
type uiCard struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	TargetW      int    `json:"tw"`
	TargetH      int    `json:"th"`
	CropW        int    `json:"cw"` // natural size of the loaded crop; 0 when none
	CropH        int    `json:"ch"`
	SourceLoaded bool   `json:"src"`
	Error        string `json:"err"`
}

const uiCardsJS = `JSON.stringify(Array.from(document.querySelectorAll('#grid .card')).map(c => {
  const crop = c.querySelector('img.result'), src = c.querySelector('img.source'), err = c.querySelector('.err .code');
  return {id: c.dataset.requestId, state: c.dataset.state, tw: +c.dataset.targetWidth, th: +c.dataset.targetHeight,
    cw: crop && crop.complete ? crop.naturalWidth : 0, ch: crop && crop.complete ? crop.naturalHeight : 0,
    src: !!(src && src.complete && src.naturalWidth > 0), err: err ? err.textContent : ''};
}))`

// The crops page in a real browser, against real processes: a batch with
// three successes, a failure and a pending request shows each crop at its
// target's aspect, the failure's code and the pending request; the
// overview's numbers are /metrics' numbers; another tenant's token does
// not see the batch. Screenshots go to artifacts/.
func TestE2ECropsPageInBrowser(t *testing.T) {
	chromium, err := localsvc.FindBinary("chromium")
	require.NoError(t, err)
	s := newStack(t, stackOptions{})
	apiAddr, metricsAddr := freeAddr(t), freeAddr(t)
	s.env = append(s.env, "CROPQ_API_TOKENS=acme:acme-tok-0123456789,globex:globex-tok-0123456789,op-tok-0123456789", "CROPQ_API_ADDR="+apiAddr,
		"CROPQ_API_METRICS_ADDR="+metricsAddr,
		"CROPQ_TENANT_WEIGHTS=acme=2,globex=1")
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")
	s.startWorker()
	worker := s.procs[len(s.procs)-1]

	tiny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = png.Encode(w, image.NewGray(image.Rect(0, 0, 60, 60))) // below the API's 100 px: code 700
	}))
	t.Cleanup(tiny.Close)

	item := func(id, img string, w, h int) string {
		return fmt.Sprintf(`{"requestId":%q,"imageUrl":%q,"targetWidth":%d,"targetHeight":%d}`, id, img, w, h)
	}
	batch := func(items ...string) {
		code, _, body := apiDo(t, http.MethodPost, base+"/v1/crops/batch", "acme-tok-0123456789", `{"batchId":"look-1","items":[`+strings.Join(items, ",")+`]}`)
		require.Equal(t, http.StatusAccepted, code, string(body))
	}
	batch(item("look-ball", s.images+"/ball-offcentre.jpg", 800, 600),
		item("look-bottle", s.images+"/bottle-tall.png", 400, 800),
		item("look-mug", s.images+"/mug-square.png", 300, 300),
		item("look-tiny", tiny.URL+"/tiny.png", 300, 300))
	for _, id := range []string{"look-ball", "look-bottle", "look-mug"} {
		s.awaitState(id, 60*time.Second, status.Succeeded)
	}
	s.awaitState("look-tiny", 60*time.Second, status.Failed)
	// No worker, no feeder: the next request of the batch stays queued.
	worker.stop()
	batch(item("look-later", s.images+"/mug-square.png", 500, 500))

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1366, 900))
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	as := func(token string) chromedp.Action[chromedp.Void] {
		auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+token))
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
			return err
		})
	}
	// The first call starts the browser and must not carry a timeout.
	require.NoError(t, chromedp.Do(ctx, as("acme-tok-0123456789")))
	tctx, cancelSteps := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancelSteps)
	dir := filepath.Join("..", "..", "artifacts")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	shoot := func(name string) {
		shot, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		_, _, err = image.Decode(bytes.NewReader(shot))
		require.NoError(t, err, "the screenshot is an image")
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), shot, 0o644))
		t.Logf("screenshot: %s (%d bytes)", filepath.Join(dir, name), len(shot))
	}
	text := func(sel string) string {
		s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, sel)
		return strings.TrimSpace(s)
	}
	attr := func(sel, name string) string {
		s, err := chromedp.Run(tctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%q).getAttribute(%q) || ''`, sel, name)))
		require.NoError(t, err, sel)
		return s
	}

	// The batch's grid, as its tenant sees it.
	resp, err := chromedp.RunResponse(tctx, chromedp.Navigate(base+"/ui/batches/look-1"))
	require.NoError(t, err)
	require.Equal(t, int64(http.StatusOK), resp.Status)
	var cards []uiCard
	require.Eventually(t, func() bool {
		raw, err := chromedp.Run(tctx, chromedp.Evaluate[string](uiCardsJS))
		if err != nil || json.Unmarshal([]byte(raw), &cards) != nil {
			return false
		}
		loaded := 0
		for _, c := range cards {
			if c.CropW > 0 && c.SourceLoaded {
				loaded++
			}
		}
		return len(cards) == 5 && loaded == 3
	}, 20*time.Second, 100*time.Millisecond, "the grid shows five requests, three crops loaded: %+v", cards)
	byID := map[string]uiCard{}
	for _, c := range cards {
		byID[c.ID] = c
	}
	assert.Equal(t, "look-tiny", cards[0].ID, "failures first")
	for _, id := range []string{"look-ball", "look-bottle", "look-mug"} {
		c := byID[id]
		assert.Equal(t, "succeeded", c.State, id)
		assert.True(t, c.SourceLoaded, "%s: the source image loads", id)
		assert.InDelta(t, float64(c.TargetW)/float64(c.TargetH), float64(c.CropW)/float64(c.CropH), 0.01,
			"%s: the crop's natural size %dx%d has the target's aspect %dx%d", id, c.CropW, c.CropH, c.TargetW, c.TargetH)
	}
	assert.Equal(t, "failed", byID["look-tiny"].State)
	assert.Equal(t, "700", byID["look-tiny"].Error, "the failure shows its code")
	assert.Equal(t, "queued", byID["look-later"].State)
	assert.Zero(t, byID["look-later"].CropW)
	assert.Equal(t, "5", text("#batch-total"))
	shoot("ui-batch.png")

	// Filtered by state: the failure alone.
	require.NoError(t, chromedp.Do(tctx, chromedp.Navigate(base+"/ui/batches/look-1?state=failed"), chromedp.WaitVisible(chromedp.CSS("#grid"))))
	raw, err := chromedp.Run(tctx, chromedp.Evaluate[string](uiCardsJS))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(raw), &cards))
	require.Len(t, cards, 1)
	assert.Equal(t, "look-tiny", cards[0].ID)

	// A request: its record, timeline, stored object and a download link.
	require.NoError(t, chromedp.Do(tctx, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#search-id")),
		chromedp.SendKeys(chromedp.CSS("#search-id"), "look-ball"), chromedp.Submit(chromedp.CSS("#search-id")),
		chromedp.WaitVisible(chromedp.CSS("#stored"))))
	rec := s.record("look-ball")
	require.NotNil(t, rec.Stored)
	stored := text("#stored")
	assert.Contains(t, stored, rec.Stored.Key)
	assert.Contains(t, stored, strconv.FormatInt(rec.Stored.Size, 10))
	assert.Contains(t, text("#api-request-id"), rec.Stored.APIRequestID)
	assert.NotEmpty(t, rec.Stored.APIRequestID)
	history, err := chromedp.Run(tctx, chromedp.Evaluate[int](`document.querySelectorAll('#history li').length`))
	require.NoError(t, err)
	assert.Equal(t, len(rec.History), history, "the whole history is on the timeline")
	download := attr("#download", "href")
	dl, err := http.Get(download)
	require.NoError(t, err)
	body, _ := io.ReadAll(dl.Body)
	dl.Body.Close()
	require.Equal(t, http.StatusOK, dl.StatusCode, "the download link works without the API's token: %s", body)
	got, _, err := image.DecodeConfig(bytes.NewReader(body))
	require.NoError(t, err)
	assert.Equal(t, [2]int{800, 600}, [2]int{got.Width, got.Height})
	shoot("ui-request.png")

	// The overview, as the operators see it: its numbers are /metrics'.
	require.NoError(t, chromedp.Do(tctx, as("op-tok-0123456789"), chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#batches"))))
	m := scrape(t, "http://"+metricsAddr+"/metrics")
	num := func(sel string) float64 {
		f, err := strconv.ParseFloat(attr(sel, "data-value"), 64)
		require.NoError(t, err, sel)
		return f
	}
	assert.Equal(t, m["cropq_quota_calls_last_hour{}"], num("#calls-hour"))
	assert.Equal(t, m["cropq_quota_calls_today{}"], num("#calls-today"))
	assert.Equal(t, m["cropq_quota_rate_limited_last_hour{}"], num("#limited-hour"))
	assert.Equal(t, m["cropq_quota_effective_rate{}"], num("#quota-effective"))
	assert.Equal(t, m["cropq_quota_ceiling_rate{}"], num("#quota-ceiling"))
	assert.GreaterOrEqual(t, m["cropq_quota_calls_last_hour{}"], 3.0, "three paid calls at least")
	assert.Equal(t, 1.0, m["cropq_failures_last_hour{code=700}"])
	assert.Equal(t, "1", text(`#failures td[data-code="700"]`))
	assert.Equal(t, 1.0, m["cropq_backlog_requests{lane=normal,tenant=acme}"])
	assert.Equal(t, "1", text(`#backlog tr[data-lane="normal"][data-tenant="acme"] td.num`))
	assert.Contains(t, text(`#batches tr[data-batch="look-1"]`), "3 succeeded · 1 failed · 1 remaining")
	shoot("ui-overview.png")

	// Failures (issue 24): a tenant sees its own, without a replay button.
	require.NoError(t, chromedp.Do(tctx, as("acme-tok-0123456789"), chromedp.Navigate(base+"/ui/failures"), chromedp.WaitVisible(chromedp.CSS("#by-code"))))
	assert.Equal(t, "1", attr("#failed-total", "data-value"))
	assert.Contains(t, text(`#by-code tr[data-key="700"]`), "700")
	assert.Contains(t, text("#samples"), "look-tiny")
	noButton, err := chromedp.Run(tctx, chromedp.Evaluate[bool](`document.querySelector('#replay') === null`))
	require.NoError(t, err)
	assert.True(t, noButton, "tenants replay through the API and the CLI")
	// The operators count, then replay, from the page (its CSRF cookie and
	// field travel with the form).
	require.NoError(t, chromedp.Do(tctx, as("op-tok-0123456789"), chromedp.Navigate(base+"/ui/failures?code=700"), chromedp.WaitVisible(chromedp.CSS("#replay"))))
	assert.Contains(t, text(`#by-tenant tr[data-key="acme"]`), "acme")
	shoot("ui-failures.png")
	require.NoError(t, chromedp.Do(tctx, chromedp.Click(chromedp.CSS(`#replay button[value="dry-run"]`)), chromedp.WaitVisible(chromedp.CSS("#replay-result"))))
	assert.Contains(t, text("#replay-result"), "Dry run: 1 failed requests match")
	assert.Equal(t, status.Failed, s.record("look-tiny").State, "a dry run changes nothing")
	require.NoError(t, chromedp.Do(tctx, chromedp.Click(chromedp.CSS("#replay-button"))))
	// The dry run's page had a result too: wait for the replay's.
	require.Eventually(t, func() bool {
		got, err := chromedp.Run(tctx, chromedp.Evaluate[string](`(document.querySelector('#replay-result') || {}).textContent || ''`))
		return err == nil && strings.Contains(got, "Replayed: 1 of 1 sent again")
	}, 20*time.Second, 50*time.Millisecond, "the replay's result")
	replayed := s.record("look-tiny")
	assert.Equal(t, status.Queued, replayed.State, "sent again (no worker runs here: it waits)")
	assert.Equal(t, 1, replayed.Replays)

	// Another tenant's token sees neither the batch nor its requests.
	require.NoError(t, chromedp.Do(tctx, as("globex-tok-0123456789")))
	for _, path := range []string{"/ui/batches/look-1", "/ui/batches/look-1?tenant=acme", "/ui/crops/look-ball"} {
		resp, err := chromedp.RunResponse(tctx, chromedp.Navigate(base+path))
		require.NoError(t, err, path)
		assert.Equal(t, int64(http.StatusNotFound), resp.Status, path)
	}
	require.NoError(t, chromedp.Do(tctx, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#main"))))
	assert.NotContains(t, text("#main"), "look-1", "the overview lists only the tenant's batches")
	// Without a token: asked for one.
	r, err := http.Get(base + "/ui/")
	require.NoError(t, err)
	r.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, r.StatusCode)
	assert.Contains(t, r.Header.Get("WWW-Authenticate"), "Basic")
}
