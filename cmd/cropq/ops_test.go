package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/localsvc"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// scrape reads a Prometheus text endpoint into name{labels} → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// A success, a 501 and a 700 move the worker's counters by exactly those
// amounts; health answers, and readiness follows the worker's state.
func TestE2EMetricsAndHealth(t *testing.T) {
	s := newStack(t, stackOptions{})
	opsAddr := freeAddr(t)
	s.startWorker("CROPQ_WORKER_ADDR="+opsAddr, "CROPQ_QUOTA_SHARED=false")
	ops := "http://" + opsAddr
	s.awaitHTTP(ops + "/healthz")
	s.awaitHTTP(ops + "/readyz")

	tiny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = png.Encode(w, image.NewGray(image.Rect(0, 0, 60, 60)))
	}))
	t.Cleanup(tiny.Close)

	// 1. A success.
	s.enqueueURL("m-ok", firstImage(t), 300, 300)
	s.awaitState("m-ok", 60*time.Second, status.Succeeded)

	// 2. One 501, then the same request succeeds.
	s.setFaults(t, `{"p501":1}`)
	s.enqueueURL("m-501", firstImage(t), 300, 300)
	require.Eventually(t, func() bool { return s.stats().Calls["501"] >= 1 }, 30*time.Second, 20*time.Millisecond)
	s.setFaults(t, `{}`) // the hand-back waits ≥ 1 s: no second 501
	s.awaitState("m-501", 60*time.Second, status.Succeeded)

	// 3. A 700 (the URL image is below the API's 100 px).
	out, err := s.cropq("enqueue", "--request-id", "m-700", "--url", tiny.URL+"/tiny.png", "--width", "300", "--height", "300")
	require.NoError(t, err, out)
	rec := s.awaitState("m-700", 60*time.Second, status.Failed)
	require.Equal(t, "700", rec.ErrorCode)

	m := scrape(t, ops+"/metrics")
	assert.Equal(t, 2.0, m[`cropq_api_calls_total{code=200}`])
	assert.Equal(t, 1.0, m[`cropq_api_calls_total{code=501}`])
	assert.Equal(t, 1.0, m[`cropq_api_calls_total{code=700}`])
	assert.Equal(t, 2.0, m[`cropq_api_usage_total{}`])
	assert.Equal(t, 2.0, m[`cropq_tasks_finished_total{code=,state=succeeded}`])
	assert.Equal(t, 1.0, m[`cropq_tasks_finished_total{code=700,state=failed}`])
	assert.Positive(t, m[`cropq_result_copy_bytes_total{}`])
	assert.Contains(t, m, `asynq_tasks_processed_total{queue=crops}`, "asynq's queue metrics are exported")
	for k := range m {
		assert.NotContains(t, k, "m-ok", "no request id as a label")
	}

	// Readiness fails when S3 is gone; liveness does not.
	require.NoError(t, s.minio.Stop(context.Background()))
	resp, err := http.Get(ops + "/readyz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(body))
	assert.Contains(t, string(body), "s3 bucket")
	resp, err = http.Get(ops + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

func (s *stack) setFaults(t *testing.T, js string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, s.emuURL+"/_emulator/faults", strings.NewReader(js))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// The asynq web UI, in a real browser: the queue and a task appear, behind
// the API's credentials, read-only; the screenshot goes to artifacts/.
func TestE2EWebUIInBrowser(t *testing.T) {
	chromium, err := localsvc.FindBinary("chromium")
	require.NoError(t, err)
	s := newStack(t, stackOptions{})
	apiAddr := freeAddr(t)
	s.env = append(s.env, "CROPQ_API_TOKENS=ui-token-0123456789", "CROPQ_API_ADDR="+apiAddr)
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")

	// Tasks in two states, no worker: one pending, one scheduled.
	// Straight into asynq: requests submitted through the CLI wait in the
	// backlog until a worker's feeder moves them.
	client := asynq.NewClientFromRedisClient(s.rdb)
	task, opts, err := tasks.NewCropTask(tasks.CropPayload{Request: tasks.Request{RequestID: "ui-pending-1", ImageURL: s.images + "/" + firstImage(t),
		Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}}},
		tasks.Options{Limits: cropapi.Limits{AllowPrivateHosts: true}})
	require.NoError(t, err)
	_, err = client.Enqueue(task, opts...)
	require.NoError(t, err)
	task, opts, err = tasks.NewCropTask(tasks.CropPayload{Request: tasks.Request{RequestID: "ui-later-1", ImageURL: s.images + "/" + firstImage(t),
		Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}}},
		tasks.Options{ProcessAt: time.Now().Add(time.Hour), Limits: cropapi.Limits{AllowPrivateHosts: true}})
	require.NoError(t, err)
	_, err = client.Enqueue(task, opts...)
	require.NoError(t, err)

	// Without credentials: refused. Read-only: a delete is refused.
	resp, err := http.Get(base + "/monitoring/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	req, err := http.NewRequest(http.MethodDelete, base+"/monitoring/api/queues/crops/pending_tasks/ui-pending-1", nil)
	require.NoError(t, err)
	req.SetBasicAuth("operator", "ui-token-0123456789")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "read-only by default")
	_, err = asynq.NewInspectorFromRedisClient(s.rdb).GetTaskInfo(tasks.DefaultQueue, "ui-pending-1")
	require.NoError(t, err, "the task is still there")

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 900))
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)

	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:ui-token-0123456789"))
	withAuth := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
		return err
	})
	// The first call starts the browser and must not carry a timeout (it
	// would stop the browser); the steps after it do.
	require.NoError(t, chromedp.Do(ctx, withAuth))
	tctx, cancelSteps := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancelSteps)
	require.NoError(t, chromedp.Do(tctx,
		chromedp.Navigate(base+"/monitoring/"),
		chromedp.WaitVisible(chromedp.Search(`//*[contains(text(), "crops")]`)),
	))
	queuesText, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("body")))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(tctx,
		chromedp.Navigate(base+"/monitoring/queues/crops?status=pending"),
		chromedp.WaitVisible(chromedp.Search(`//*[contains(text(), "ui-pending-1")]`)),
	))
	taskText, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("body")))
	require.NoError(t, err)
	shot, err := chromedp.Run(tctx, chromedp.FullScreenshot(90))
	require.NoError(t, err)
	assert.Contains(t, queuesText, "crops")
	assert.Contains(t, taskText, "ui-pending-1")
	assert.NotContains(t, taskText, "imageBase64\": \"/9j", "no image bodies on screen")

	dir := filepath.Join("..", "..", "artifacts")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, "monitoring-pending.jpg")
	require.NoError(t, os.WriteFile(path, shot, 0o644))
	_, _, err = image.Decode(bytes.NewReader(shot))
	require.NoError(t, err, "the screenshot is an image")
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
}

// A full crop through the API and a worker with known secrets: no secret
// appears in any log line, status record, task payload or metric.
func TestE2ESecretsNeverLeak(t *testing.T) {
	s := newStack(t, stackOptions{})
	const (
		token   = "tok-SECRET-7f3a-91d2"
		webhook = "whsec-SECRET-91bc"
	)
	apiAddr, opsAddr := freeAddr(t), freeAddr(t)
	s.env = append(s.env, "CROPQ_API_TOKENS="+token, "CROPQ_API_ADDR="+apiAddr, "CROPQ_WEBHOOK_SECRET="+webhook,
		"CROPQ_LOG_LEVEL=debug", "CROPQ_LOG_FORMAT=json", "CROPQ_WEBHOOK_ALLOW=127.0.0.0/8")
	s.start("api", "api")
	s.awaitHTTP("http://" + apiAddr + "/healthz")
	s.startWorker("CROPQ_WORKER_ADDR=" + opsAddr)

	body := fmt.Sprintf(`{"requestId":"sec-1","imageUrl":%q,"targetWidth":300,"targetHeight":300,"callbackUrl":"http://127.0.0.1:1/hook?key=cb-SECRET-q"}`,
		s.images+"/"+firstImage(t))
	code, _, _ := apiDo(t, http.MethodPost, "http://"+apiAddr+"/v1/crops", token, body)
	require.Equal(t, http.StatusAccepted, code)
	rec := s.awaitState("sec-1", 60*time.Second, status.Succeeded)

	// A failure's path too: a request the API refuses.
	out, err := s.cropq("enqueue", "--request-id", "sec-2", "--url", s.images+"/"+firstImage(t)+"?sensitive", "--width", "300", "--height", "300")
	require.NoError(t, err, out)
	s.awaitState("sec-2", 60*time.Second, status.Failed)

	metrics := scrapeText(t, "http://"+opsAddr+"/metrics")
	var everything strings.Builder
	for _, p := range s.procs {
		p.stop()
		everything.WriteString(p.out.String())
	}
	for _, id := range []string{"sec-1", "sec-2"} {
		out, err := s.cropq("status", id, "--json")
		require.NoError(t, err)
		everything.WriteString(out)
	}
	keys, err := s.rdb.Keys(context.Background(), "*").Result()
	require.NoError(t, err)
	for _, k := range keys {
		if typ, _ := s.rdb.Type(context.Background(), k).Result(); typ == "string" {
			v, _ := s.rdb.Get(context.Background(), k).Result()
			everything.WriteString(v)
		} else if typ == "hash" {
			m, _ := s.rdb.HGetAll(context.Background(), k).Result()
			fmt.Fprint(&everything, m)
		}
	}
	everything.WriteString(metrics)
	all := everything.String()
	require.Contains(t, logsOnly(s), `"request_id":"sec-1"`, "the debug logs were captured")
	require.NotNil(t, rec.Stored)
	for name, secret := range map[string]string{
		"app secret": "e2e-secret", "S3 secret key": s.minio.SecretKey(), "API token": token,
		"webhook secret": webhook,
	} {
		assert.NotContains(t, all, secret, "the %s leaked", name)
	}
	assert.NotContains(t, logsOnly(s), "cb-SECRET-q", "callback query strings are not logged")
}

// logsOnly is the processes' output (after stop).
func logsOnly(s *stack) string {
	var b strings.Builder
	for _, p := range s.procs {
		b.WriteString(p.out.String())
	}
	return b.String()
}

func scrapeText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
