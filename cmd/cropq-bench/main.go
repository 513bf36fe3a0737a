// Command cropq-bench measures the crop pipeline against baselines taken in
// the same run, on a real redis-server and MinIO it starts itself, and prints
// a table. It is a benchmark, not a test: it never fails on a number, it
// reports it next to its target.
//
//	cropq-bench [pipeline|memory|all]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cropq/cropq/internal/localsvc"
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
	fs.IntVar(&o.memImages, "enqueue-mem-images", 200, "enqueue: 2 MB requests queued to measure Redis memory (scaled to 1,000)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq-bench [flags] [pipeline|memory|all|quota|enqueue]\n\nall = pipeline and memory; quota (make bench-quota) takes about 5 minutes.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	which := "all"
	if fs.NArg() > 0 {
		which = fs.Arg(0)
	}
	if which != "all" && which != "pipeline" && which != "memory" && which != "quota" && which != "enqueue" {
		return fmt.Errorf("unknown benchmark %q (pipeline, memory, all, quota or enqueue)", which)
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
	dir   string
	redis *localsvc.Redis
	minio *localsvc.MinIO
}

func startEnv(ctx context.Context) (*benchEnv, error) {
	dir, err := os.MkdirTemp("", "cropq-bench-*")
	if err != nil {
		return nil, err
	}
	e := &benchEnv{dir: dir}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if e.redis, err = localsvc.StartRedis(startCtx, localsvc.RedisOptions{Dir: dir + "/redis"}); err != nil {
		e.stop()
		return nil, fmt.Errorf("start redis: %w", err)
	}
	if e.minio, err = localsvc.StartMinIO(startCtx, localsvc.MinIOOptions{Dir: dir + "/minio"}); err != nil {
		e.stop()
		return nil, fmt.Errorf("start minio: %w", err)
	}
	return e, nil
}

func (e *benchEnv) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errs []error
	if e.minio != nil {
		errs = append(errs, e.minio.Stop(ctx))
	}
	if e.redis != nil {
		errs = append(errs, e.redis.Stop(ctx))
	}
	errs = append(errs, os.RemoveAll(e.dir))
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, "cropq-bench: cleanup:", strings.TrimSpace(err.Error()))
	}
}
