// Command cropq-bench measures the crop pipeline against baselines taken in
// the same run, on a real redis-server and MinIO it starts itself, and prints
// a table. It is a benchmark, not a test: it never fails on a number, it
// reports it next to its target.
//
//	cropq-bench [pipeline|tracing|memory|all|quota|enqueue|backlog|backlog-flood|ui|dedup|report|replay|resync|manifest]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cropq/cropq/internal/imageformat"
	"github.com/cropq/cropq/internal/localstack"
	"github.com/cropq/cropq/internal/localsvc"
	"github.com/cropq/cropq/storage"
)

type options struct {
	tasks       int
	concurrency int
	memTasks    int
	memLargeMiB int

	quotaQ           float64
	quotaN           int
	quotaPods        int
	quotaConcurrency int

	enqueueN          int
	enqueueGoroutines int
	enqueueChunk      int
	memImages         int

	backlogMemN        int
	backlogQ           float64
	backlogN           int
	backlogPods        int
	backlogConcurrency int

	uiN, uiDone, uiFailed int
	dedupN                int
	dedupWaves            int
	dedupQ                float64
	dedupPods             int
	dedupConcurrency      int

	manifestN, manifestFileN, manifestReadN int
	reportN, reportBaselineN                int
	replayN                                 int
	resyncN, resyncCrops, resyncNew         int
	resyncBaseN, resyncBaseCrops            int
	resyncQ, resyncReplaced                 float64
	resyncPods, resyncConcurrency           int
	resyncCopies                            int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cropq-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.tasks, "tasks", 2000, "tasks per throughput run")
	fs.IntVar(&o.concurrency, "concurrency", 16, "worker concurrency in the throughput runs")
	fs.IntVar(&o.memTasks, "mem-tasks", 16, "tasks per memory run (concurrency 8)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the benchmark process to this file")
	fs.IntVar(&o.memLargeMiB, "mem-large-mib", 50, "approximate size of the large results, MiB")
	fs.Float64Var(&o.quotaQ, "quota-q", 20, "quota: the emulator's quota Q, calls/s")
	fs.IntVar(&o.quotaN, "quota-n", 1200, "quota: requests per scenario")
	fs.IntVar(&o.quotaPods, "quota-pods", 4, "quota: worker processes")
	fs.IntVar(&o.quotaConcurrency, "quota-concurrency", 20, "quota: concurrency of each worker process")
	fs.IntVar(&o.enqueueN, "enqueue-n", 20000, "enqueue: requests per run")
	fs.IntVar(&o.enqueueGoroutines, "enqueue-goroutines", 16, "enqueue: goroutines, the same for every variant")
	fs.IntVar(&o.enqueueChunk, "enqueue-chunk", 500, "enqueue: requests per library batch and per HTTP batch")
	fs.IntVar(&o.backlogMemN, "backlog-mem-n", 100000, "backlog: URL requests queued to measure Redis bytes per request")
	fs.Float64Var(&o.backlogQ, "backlog-q", 20, "backlog: the emulator's quota Q, calls/s")
	fs.IntVar(&o.backlogN, "backlog-n", 6000, "backlog: requests queued ahead (backfill; tenant a)")
	fs.IntVar(&o.backlogPods, "backlog-pods", 3, "backlog: worker processes")
	fs.IntVar(&o.backlogConcurrency, "backlog-concurrency", 20, "backlog: concurrency of each worker process")
	fs.IntVar(&o.uiN, "ui-n", 100000, "ui: requests in the large batch")
	fs.IntVar(&o.uiDone, "ui-done", 5000, "ui: of which succeeded")
	fs.IntVar(&o.uiFailed, "ui-failed", 300, "ui: of which failed")
	fs.IntVar(&o.dedupN, "dedup-n", 2000, "dedup: requests of the synthetic catalogue")
	fs.IntVar(&o.dedupWaves, "dedup-waves", 4, "dedup: waves the catalogue arrives in (each once the one before is done)")
	fs.Float64Var(&o.dedupQ, "dedup-q", 25, "dedup: the emulator's quota Q, calls/s (and CROPQ_QUOTA_RATE)")
	fs.IntVar(&o.dedupPods, "dedup-pods", 3, "dedup: worker processes")
	fs.IntVar(&o.dedupConcurrency, "dedup-concurrency", 10, "dedup: concurrency of each worker process")
	fs.IntVar(&o.manifestN, "manifest-n", 1000000, "manifest: lines of the manifest registered and waiting")
	fs.IntVar(&o.manifestFileN, "manifest-file-n", 50000, "manifest: lines of the baseline through the --file path")
	fs.IntVar(&o.manifestReadN, "manifest-read-n", 100000, "manifest: lines the reader reads, timed")
	fs.IntVar(&o.reportN, "report-n", 1_000_000, "report: requests of the batch whose report is streamed")
	fs.IntVar(&o.reportBaselineN, "report-baseline-n", 100_000, "report: records read one by one for the baseline (a sample)")
	fs.IntVar(&o.replayN, "replay-n", 100000, "replay: failed requests replayed")
	fs.IntVar(&o.resyncN, "resync-n", 10000, "resync: new request ids of the re-sync")
	fs.IntVar(&o.resyncCrops, "resync-crops", 200, "resync: crops already stored that the re-sync asks for")
	fs.IntVar(&o.resyncNew, "resync-new", 100, "resync: new listings submitted right behind the re-sync")
	fs.IntVar(&o.resyncBaseN, "resync-base-n", 1000, "resync: request ids of the baseline and of the origin without validators")
	fs.IntVar(&o.resyncBaseCrops, "resync-base-crops", 20, "resync: stored crops of the baseline and of the origin without validators")
	fs.Float64Var(&o.resyncQ, "resync-q", 5, "resync: the emulator's quota Q, calls/s (and CROPQ_QUOTA_RATE)")
	fs.Float64Var(&o.resyncReplaced, "resync-replaced", 0.05, "resync: share of the photos replaced behind the same URLs before the second re-sync")
	fs.IntVar(&o.resyncPods, "resync-pods", 2, "resync: worker processes")
	fs.IntVar(&o.resyncConcurrency, "resync-concurrency", 20, "resync: concurrency of each worker process")
	fs.IntVar(&o.resyncCopies, "resync-copies", 4000, "resync: copies of the bare S3 CopyObject loop")
	fs.IntVar(&o.memImages, "enqueue-mem-images", 200, "enqueue: 2 MB requests queued to measure Redis memory (scaled to 1,000)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq-bench [flags] [pipeline|tracing|memory|all|quota|enqueue|backlog|backlog-flood|ui|dedup|report|replay|resync|manifest]\n\nall = pipeline, tracing and memory; quota (make bench-quota) takes about 5 minutes; backlog-flood is part 6 of backlog alone.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	which := "all"
	if fs.NArg() > 0 {
		which = fs.Arg(0)
	}
	if !slices.Contains([]string{"all", "pipeline", "tracing", "memory", "quota", "enqueue", "backlog", "backlog-flood", "ui", "dedup", "report", "replay", "resync", "manifest"}, which) {
		return fmt.Errorf("unknown benchmark %q (pipeline, tracing, memory, all, quota, enqueue, backlog, backlog-flood, ui, dedup, report, replay, resync or manifest)", which)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	env, err := startEnv(ctx)
	if err != nil {
		return err
	}
	defer env.stop()

	var rows []row
	if which == "all" || which == "pipeline" {
		r, err := benchPipeline(ctx, env, o, log)
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "all" || which == "tracing" {
		r, err := benchTracing(ctx, env, o, log)
		if err != nil {
			return fmt.Errorf("tracing: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "all" || which == "memory" {
		r, err := benchMemory(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("memory: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "enqueue" {
		r, err := benchEnqueue(ctx, env, o)
		if err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "backlog" {
		r, err := benchBacklog(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("backlog: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "backlog-flood" {
		r, err := benchBacklogFlood(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("backlog: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "ui" {
		r, err := benchUI(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("ui: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "dedup" {
		r, err := benchDedup(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("dedup: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "manifest" {
		r, err := benchManifest(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "report" {
		r, err := benchReport(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "replay" {
		r, err := benchReplay(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "resync" {
		r, err := benchResync(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("resync: %w", err)
		}
		rows = append(rows, r...)
	}
	if which == "quota" {
		r, err := benchQuota(ctx, env, o, stderr)
		if err != nil {
			return fmt.Errorf("quota: %w", err)
		}
		rows = append(rows, r...)
	}
	printTable(stdout, rows)
	return nil
}

// row is one line of the result table.
type row struct {
	bench, variant, value, ratio, target, verdict string
}

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark\tvariant\tvalue\tratio\ttarget\tverdict")
	fmt.Fprintln(tw, "---------\t-------\t-----\t-----\t------\t-------")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.bench, r.variant, r.value, r.ratio, r.target, r.verdict)
	}
	_ = tw.Flush()
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

// benchEnv is the real Redis and MinIO shared by every run, in a temp dir.
type benchEnv struct {
	stack *localstack.Stack
	redis *localsvc.Redis
	minio *localsvc.MinIO
}

func startEnv(ctx context.Context) (*benchEnv, error) {
	dir, err := os.MkdirTemp("", "cropq-bench-*")
	if err != nil {
		return nil, err
	}
	e := &benchEnv{stack: localstack.New(dir)}
	e.stack.OnStop(func() error { return os.RemoveAll(dir) })
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if e.redis, err = e.stack.Redis(startCtx, localsvc.RedisOptions{}); err != nil {
		e.stop()
		return nil, err
	}
	if e.minio, err = e.stack.MinIO(startCtx, localsvc.MinIOOptions{}); err != nil {
		e.stop()
		return nil, err
	}
	return e, nil
}

// s3Config is how the benchmark's own clients reach its MinIO.
func (e *benchEnv) s3Config() storage.S3Config {
	return storage.S3Config{Endpoint: e.minio.Endpoint(), UsePathStyle: true, AccessKeyID: e.minio.AccessKey(), SecretAccessKey: e.minio.SecretKey()}
}

// newBucket creates a bucket on the benchmark's MinIO and returns a client.
func (e *benchEnv) newBucket(ctx context.Context, name string) (*s3.Client, error) {
	c, err := storage.NewS3Client(ctx, e.s3Config())
	if err != nil {
		return nil, err
	}
	return c, localstack.CreateBucket(ctx, c, name)
}

// workerEnv is the environment of a `cropq worker` process of the
// benchmarks: this run's Redis and MinIO, the emulator at apiURL, then
// extra.
func (e *benchEnv) workerEnv(apiURL, bucket string, extra ...string) []string {
	ep := localstack.Endpoints{Redis: e.redis, MinIO: e.minio, Bucket: bucket, APIURL: apiURL, AppKey: benchKey, AppSecret: benchSecret}
	return ep.Env(append([]string{"CROPQ_LOG_LEVEL=warn"}, extra...)...)
}

// startWorkers starts n `cropq worker` processes of bin at a concurrency,
// their stderr into logs.
func (e *benchEnv) startWorkers(bin string, n, concurrency int, env []string, logs io.Writer) ([]*localstack.Process, error) {
	var ps []*localstack.Process
	for range n {
		p, err := localstack.Start(localstack.Command{Bin: bin, Args: []string{"worker", "--concurrency", strconv.Itoa(concurrency)},
			Env: env, Stderr: logs})
		if err != nil {
			return ps, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// stopWorkers stops ps, and says how the first that failed exited, with
// the workers' logs.
func stopWorkers(ctx context.Context, ps []*localstack.Process, logs fmt.Stringer) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), localstack.StopTimeout)
	defer cancel()
	if err := localstack.StopAll(ctx, ps...); err != nil {
		return fmt.Errorf("worker exited: %w\n%s", err, logs.String())
	}
	return nil
}

func (e *benchEnv) stop() {
	if err := e.stack.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "cropq-bench: cleanup:", strings.TrimSpace(err.Error()))
	}
}

// sampleHandler serves one of the repository's sample images, whatever
// the path, with its format's content type.
func sampleHandler(name string) (http.Handler, error) {
	root, err := localsvc.RepoRoot()
	if err != nil {
		return nil, err
	}
	img, err := os.ReadFile(filepath.Join(root, "testdata", "images", name))
	if err != nil {
		return nil, err
	}
	format, ok := imageformat.ByFileName(name)
	if !ok {
		return nil, fmt.Errorf("sample %s: not an image", name)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", format.ContentType)
		_, _ = w.Write(img)
	}), nil
}
