package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cropq/cropq/cmd/internal/wiring"
	"github.com/cropq/cropq/cropapi/cropapitest"
	"github.com/cropq/cropq/internal/imageformat"
	"github.com/cropq/cropq/internal/localstack"
	"github.com/cropq/cropq/internal/localsvc"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/redact"
	"github.com/cropq/cropq/internal/webui"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/storage"
	"github.com/cropq/cropq/tasks"
	"github.com/cropq/cropq/worker"
)

func runDev(ctx context.Context, env wiring.Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq-dev dev", flag.ContinueOnError)
	samples := fs.String("samples", filepath.Join("testdata", "images"), "directory of sample images to crop")
	once := fs.Bool("once", false, "exit after the samples are done instead of serving until Ctrl-C")
	width := fs.Int("width", 800, "target width of the sample crops")
	height := fs.Int("height", 800, "target height of the sample crops")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the samples")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: cropq-dev dev [flags]

Runs the whole system on this machine and crops the sample images:
  Redis     CROPQ_REDIS_URL if set, else redis-server from PATH or .tools/bin on a free port,
            else an in-process Redis (miniredis) with a warning
  S3        CROPQ_S3_ENDPOINT if set, else MinIO from PATH or .tools/bin, else an in-process S3 (gofakes3)
  API       the local emulator of the Image Cropping API (never the paid API)
  worker    one worker process, in-process
Ctrl-C stops everything.`)
		fs.PrintDefaults()
	}
	if err := wiring.ParseFlags(fs, args, stderr); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }

	images, err := sampleImages(*samples)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "cropq-dev-*")
	if err != nil {
		return err
	}
	// What dev starts is stopped in reverse order when it returns.
	stack := localstack.New(dir)
	defer func() { _ = stack.Stop() }()
	stack.OnStop(func() error { return os.RemoveAll(dir) })

	cfg, err := wiring.LoadConfig(env)
	if err != nil {
		return err
	}
	cfg.Server.DelayedTaskCheckInterval = time.Second
	cfg.Server.Backoff.Base = time.Second

	// Redis.
	if !env.IsSet("CROPQ_REDIS_URL") {
		if cfg.RedisURL, err = devRedis(ctx, stack, say); err != nil {
			return err
		}
	}
	rdb, err := wiring.OpenRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	stack.OnStop(rdb.Close)
	say("redis     %s", redact.URL(cfg.RedisURL))

	// S3.
	if !env.IsSet("CROPQ_S3_ENDPOINT") {
		if cfg.S3, err = devS3(ctx, stack, say); err != nil {
			return err
		}
	}
	if err := ensureBucket(ctx, cfg); err != nil {
		return err
	}
	say("s3        %s bucket %s", cfg.S3.Endpoint, cfg.Storage.Bucket)

	// The API: always the local emulator in dev, never the paid API.
	if cfg.API.AppKey == "" {
		cfg.API.AppKey, cfg.API.AppSecret = "dev-app-key", "dev-app-secret"
	}
	emu, err := cropapitest.New(cropapitest.Config{AppKey: cfg.API.AppKey, AppSecret: cfg.API.AppSecret, Logger: log})
	if err != nil {
		return err
	}
	emuURL, err := stack.Serve(emu)
	if err != nil {
		return err
	}
	cfg.API.BaseURL = emuURL
	// The samples are served on this machine.
	cfg.API.Limits.AllowPrivateHosts, cfg.Task.Limits.AllowPrivateHosts = true, true
	// Results come from the emulator, over plain http, in dev only.
	emuHost, _ := url.Parse(emuURL)
	cfg.Storage.ResultHosts, cfg.Storage.AllowHTTP = []string{emuHost.Hostname()}, true
	say("emulator  %s (local stand-in of the Image Cropping API; counters at %s/_emulator/stats)", emuURL, emuURL)

	// The samples, served over HTTP so that URL crops work too.
	imgURL, err := stack.Serve(http.FileServer(http.Dir(*samples)))
	if err != nil {
		return err
	}

	// A worker.
	srv, err := worker.New(ctx, wiring.WorkerConfig(cfg, rdb, log, nil))
	if err != nil {
		return wiring.EnvContext(err)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Run(wctx) }()
	stack.OnStop(func() error { stopWorker(); wg.Wait(); return nil })
	say("worker    concurrency %d, queue %s", cfg.Server.Concurrency, cfg.Task.Queue)

	// Enqueue the samples: the first by base64, the rest by URL.
	prod, err := wiring.NewProducer(ctx, cfg, rdb, log)
	if err != nil {
		return err
	}
	defer prod.Close()
	run := time.Now().Format("150405")
	batchID := "samples-" + run
	uiURL, uiToken, err := devWebUI(ctx, stack, cfg, rdb, prod, log)
	if err != nil {
		return err
	}
	say("web UI    %s%s (user any, password %s)", uiURL, webui.Root, uiToken)
	var ids []string
	for i, name := range images {
		p := tasks.Request{RequestID: fmt.Sprintf("dev-%s-%s", run, strings.TrimSuffix(name, filepath.Ext(name))),
			Params: tasks.Params{TargetWidth: *width, TargetHeight: *height, BatchID: batchID}}
		if i == 0 {
			raw, err := os.ReadFile(filepath.Join(*samples, name))
			if err != nil {
				return err
			}
			p.ImageBase64 = base64.StdEncoding.EncodeToString(raw)
		} else {
			p.ImageURL = imgURL + "/" + name
		}
		if res := prod.Enqueue(ctx, p); res.Err != nil {
			return fmt.Errorf("enqueue sample %s: %w", name, res.Err)
		}
		ids = append(ids, p.RequestID)
	}
	say("enqueued  %d sample crops at %dx%d", len(ids), *width, *height)

	recs, err := awaitTerminal(ctx, records.NewStore(rdb, cfg.Status), ids, *timeout)
	printRecords(stdout, recs)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range recs {
		if r.State != status.Succeeded {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d sample crops did not succeed", failed, len(recs))
	}
	link, err := devBatchPage(ctx, uiURL, uiToken, batchID, len(ids))
	if err != nil {
		return err
	}
	say("web UI    batch %s: %s", batchID, link)
	if *once {
		return nil
	}
	say("\nAll samples cropped. Still serving; try:\n  CROPQ_REDIS_URL=%s go run ./cmd/cropq status %s --json\nCtrl-C stops everything.", cfg.RedisURL, ids[0])
	<-ctx.Done()
	say("stopping")
	return nil
}

func sampleImages(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("samples: %w (run from the repository root, or pass --samples)", err)
	}
	var out []string
	for _, e := range entries {
		if _, ok := imageformat.ByFileName(e.Name()); ok {
			out = append(out, e.Name())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("samples: no images in %s", dir)
	}
	sort.Strings(out)
	return out, nil
}

// devRedis starts redis-server, or an in-process Redis when none is installed.
func devRedis(ctx context.Context, stack *localstack.Stack, say func(string, ...any)) (string, error) {
	bin, err := localsvc.FindBinary("redis-server")
	if err == nil {
		r, err := stack.Redis(ctx, localsvc.RedisOptions{Binary: bin})
		if err != nil {
			return "", err
		}
		return r.URL(), nil
	}
	say("WARNING   %v\n          using an in-process Redis (miniredis): fine for this demo, not for tests of expiry or for production", err)
	m, err := miniredis.Run()
	if err != nil {
		return "", fmt.Errorf("in-process redis: %w", err)
	}
	stack.OnStop(func() error { m.Close(); return nil })
	return "redis://" + m.Addr() + "/0", nil
}

// devS3 starts MinIO, or an in-process S3 server when none is installed.
func devS3(ctx context.Context, stack *localstack.Stack, say func(string, ...any)) (storage.S3Config, error) {
	const user, pass = "cropqdev", "cropqdev-secret"
	bin, err := localsvc.FindBinary("minio")
	if err == nil {
		m, err := stack.MinIO(ctx, localsvc.MinIOOptions{Binary: bin, AccessKey: user, SecretKey: pass})
		if err != nil {
			return storage.S3Config{}, err
		}
		return storage.S3Config{Endpoint: m.Endpoint(), Region: "us-east-1", UsePathStyle: true, AccessKeyID: user, SecretAccessKey: pass}, nil
	}
	say("WARNING   %v\n          using an in-process S3 server (gofakes3)", err)
	faker := gofakes3.New(s3mem.New())
	endpoint, err := stack.Serve(faker.Server())
	if err != nil {
		return storage.S3Config{}, err
	}
	return storage.S3Config{Endpoint: endpoint, Region: "us-east-1", UsePathStyle: true, AccessKeyID: user, SecretAccessKey: pass}, nil
}

func ensureBucket(ctx context.Context, cfg wiring.Config) error {
	client, err := storage.NewS3Client(ctx, cfg.S3)
	if err != nil {
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := client.HeadBucket(hctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Storage.Bucket)}); err == nil {
		return nil
	}
	return localstack.CreateBucket(ctx, client, cfg.Storage.Bucket)
}

// awaitTerminal polls the records until all are terminal or timeout.
func awaitTerminal(ctx context.Context, st *records.Store, ids []string, timeout time.Duration) ([]status.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		recs := make([]status.Record, 0, len(ids))
		done := true
		for _, id := range ids {
			r, err := st.Get(ctx, id)
			if err != nil && !errors.Is(err, status.ErrNotFound) {
				return recs, err
			}
			if err != nil {
				r = status.Record{RequestID: id, State: "unknown"}
			}
			done = done && r.State.Terminal()
			recs = append(recs, r)
		}
		if done {
			return recs, nil
		}
		select {
		case <-ctx.Done():
			return recs, fmt.Errorf("samples not finished: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func printRecords(w io.Writer, recs []status.Record) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nREQUEST ID\tSTATE\tATTEMPT\tPAID CALLS\tS3 OBJECT\tSIZE\tERROR")
	for _, r := range recs {
		obj, size := "-", "-"
		if r.Stored != nil {
			obj, size = "s3://"+r.Stored.Bucket+"/"+r.Stored.Key, fmt.Sprint(r.Stored.Size)
		}
		errText := "-"
		if r.ErrorCode != "" {
			errText = r.ErrorCode + ": " + r.ErrorMessage
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.RequestID, r.State, r.Attempt, r.PaidCalls, obj, size, errText)
	}
	_ = tw.Flush()
}
