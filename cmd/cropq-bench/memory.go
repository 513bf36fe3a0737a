package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// memCase is one memory run: a source image and the target that makes the
// emulator's result about the wanted size.
type memCase struct {
	name    string
	src     []byte
	srcType string
	w, h    int
}

// benchMemory runs a real `cropq worker` process at concurrency 8 through
// small results, then a fresh one through large results, and compares their
// peak RSS (VmHWM): the copy must stream, not buffer whole results.
func benchMemory(ctx context.Context, env *benchEnv, o options, stderr io.Writer) ([]row, error) {
	bin, err := buildCropq(ctx, env)
	if err != nil {
		return nil, err
	}

	small, err := noiseJPEG(640, 640)
	if err != nil {
		return nil, err
	}
	// A PNG of noise barely compresses, so a 4200×4200 result is ~50 MB.
	side := sideFor(int64(o.memLargeMiB) << 20)
	large, err := noisePNG(side/2, side/2)
	if err != nil {
		return nil, err
	}
	cases := []memCase{
		{name: "small", src: small, srcType: "image/jpeg", w: 400, h: 400},
		{name: "large", src: large, srcType: "image/png", w: side, h: side},
	}
	type result struct {
		peak, size int64
	}
	var res []result
	for _, c := range cases {
		peak, size, err := runMemCase(ctx, env, bin, c, o.memTasks, stderr)
		if err != nil {
			return nil, fmt.Errorf("%s results: %w", c.name, err)
		}
		res = append(res, result{peak, size})
	}
	growth := res[1].peak - res[0].peak
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	return []row{
		{"memory", fmt.Sprintf("worker peak RSS, %s results ×%d, c=8 (baseline)", human(res[0].size), o.memTasks), mib(res[0].peak), "1.00", "", ""},
		{"memory", fmt.Sprintf("worker peak RSS, %s results ×%d, c=8", human(res[1].size), o.memTasks), mib(res[1].peak), fmt.Sprintf("%.2f", float64(res[1].peak)/float64(res[0].peak)), "", ""},
		{"memory", "peak RSS growth (large − small)", mib(growth), "", "< 32 MiB", verdict(growth < 32<<20)},
	}, nil
}

// sideFor is the square side whose RGB noise PNG is about n bytes.
func sideFor(n int64) int {
	s := 1
	for int64(s*s*3) < n {
		s += 10
	}
	return min(s, 5000)
}

func human(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MB", float64(n)/1e6)
	default:
		return fmt.Sprintf("%.0f KB", float64(n)/1e3)
	}
}

func runMemCase(ctx context.Context, env *benchEnv, bin string, c memCase, n int, stderr io.Writer) (peak, size int64, err error) {
	rdb := redis.NewClient(&redis.Options{Addr: env.redis.Addr()})
	defer rdb.Close()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		return 0, 0, err
	}
	emu, err := cropapitest.New(cropapitest.Config{AppKey: benchKey, AppSecret: benchSecret, Rate: 1e9, Burst: 1 << 30,
		CropCache: 2, MaxStoredBytes: 4 << 30, MaxFetchBytes: 64 << 20})
	if err != nil {
		return 0, 0, err
	}
	api := httptest.NewServer(emu)
	defer api.Close()
	images := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", c.srcType)
		_, _ = w.Write(c.src)
	}))
	defer images.Close()

	bucket := "bench-memory-" + c.name
	if _, err := env.newBucket(ctx, bucket); err != nil {
		return 0, 0, err
	}

	statuses := records.NewStore(rdb, status.Config{})
	client := asynq.NewClientFromRedisClient(rdb)
	for i := range n {
		pl := tasks.CropPayload{Request: tasks.Request{RequestID: fmt.Sprintf("mem-%s-%03d", c.name, i), ImageURL: images.URL + "/src",
			Params: tasks.Params{TargetWidth: c.w, TargetHeight: c.h}}}
		task, opts, err := tasks.NewCropTask(pl, tasks.Options{Retention: time.Hour, Limits: cropapi.Limits{AllowPrivateHosts: true}})
		if err != nil {
			return 0, 0, err
		}
		if _, _, err := statuses.Create(ctx, status.Record{RequestID: pl.RequestID, Params: tasks.Params{TargetWidth: c.w, TargetHeight: c.h}, Source: pl.Source()}); err != nil {
			return 0, 0, err
		}
		if _, err := client.EnqueueContext(ctx, task, opts...); err != nil {
			return 0, 0, err
		}
	}

	var logs bytes.Buffer
	// The shared quota's ceiling matches this emulator's (unlimited) one: the
	// run measures the copy path. At the default 5/s the growth varies more
	// (32-36 MiB): the Go heap peaks at the same ~34 MB (gctrace), but
	// freed part buffers wait longer for the scavenger before leaving RSS.
	wenv := env.workerEnv(api.URL, bucket, "CROPQ_MAX_RESULT_BYTES="+strconv.Itoa(128<<20), "CROPQ_QUOTA_RATE=1000")
	procs, err := env.startWorkers(bin, 1, 8, wenv, &logs)
	defer func() {
		if werr := stopWorkers(ctx, procs, &logs); werr != nil && err == nil {
			err = werr
		}
	}()
	if err != nil {
		return 0, 0, err
	}
	if err := awaitCompleted(ctx, rdb, tasks.DefaultQueue, n); err != nil {
		return 0, 0, fmt.Errorf("%w\nworker log:\n%s", err, logs.String())
	}
	peak, err = vmHWM(procs[0].Cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	rec, err := statuses.Get(ctx, fmt.Sprintf("mem-%s-%03d", c.name, 0))
	if err != nil {
		return 0, 0, err
	}
	if rec.Stored == nil {
		return 0, 0, fmt.Errorf("task %s has no stored object", rec.RequestID)
	}
	if usage := emu.Stats().Usage; usage != int64(n) {
		fmt.Fprintf(stderr, "cropq-bench: memory %s: %d paid calls for %d tasks\n", c.name, usage, n)
	}
	return peak, rec.Stored.Size, nil
}

// vmHWM is a process's peak resident set size (Linux).
func vmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS needs Linux /proc: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

func noise(w, h int) *image.RGBA {
	rng := rand.New(rand.NewPCG(7, 11))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		if i%4 == 3 {
			img.Pix[i] = 255
		} else {
			img.Pix[i] = uint8(rng.IntN(256))
		}
	}
	return img
}

func noiseJPEG(w, h int) ([]byte, error) {
	var b bytes.Buffer
	err := jpeg.Encode(&b, noise(w, h), &jpeg.Options{Quality: 70})
	return b.Bytes(), err
}

func noisePNG(w, h int) ([]byte, error) {
	var b bytes.Buffer
	err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&b, noise(w, h))
	return b.Bytes(), err
}
