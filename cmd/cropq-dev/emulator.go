package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/cropq/cropq/cmd/internal/wiring"
	"github.com/cropq/cropq/cropapi/cropapitest"
)

func runEmulator(ctx context.Context, env wiring.Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq-dev emulator", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address HOST:PORT")
	var cfg cropapitest.Config
	fs.Float64Var(&cfg.Rate, "rate", 5, "quota shared by all callers, requests per second (the vendor's default is 5)")
	fs.IntVar(&cfg.Burst, "burst", 0, "quota burst (default: the rate, rounded up)")
	fs.BoolVar(&cfg.RateLimit429, "rate-limit-429", false, "answer over-quota calls with HTTP 429 at the gateway instead of resCode 501")
	fs.DurationVar(&cfg.ResultTTL, "result-ttl", time.Hour, "lifetime of result URLs")
	fs.DurationVar(&cfg.TimestampWindow, "timestamp-window", 15*time.Minute, "accepted clock skew of request timestamps")
	fs.Float64Var(&cfg.Faults.P500, "p500", 0, "probability of answering resCode 500")
	fs.Float64Var(&cfg.Faults.P501, "p501", 0, "probability of answering resCode 501 (rate limited) whatever the quota")
	fs.Float64Var(&cfg.Faults.P801, "p801", 0, "probability of answering resCode 801")
	fs.Float64Var(&cfg.Faults.P900, "p900", 0, "probability of answering resCode 900")
	fs.Float64Var(&cfg.Faults.P1001, "p1001", 0, "probability of answering resCode 1001")
	fs.Float64Var(&cfg.Faults.P1002, "p1002", 0, "probability of answering resCode 1002")
	fs.DurationVar(&cfg.Faults.Latency, "latency", 0, "added latency of every API call")
	fs.DurationVar(&cfg.Faults.LatencyJitter, "latency-jitter", 0, "uniform jitter (±) of the added latency")
	fs.Float64Var(&cfg.Faults.PTruncate, "p-truncate", 0, "probability that a result download is cut short")
	fs.DurationVar(&cfg.Faults.SlowDownload, "slow-download", 0, "spread each result download over this long")
	fs.StringVar(&cfg.Faults.SensitiveMarker, "sensitive-marker", "sensitive", "imageUrl containing this is answered resCode 1000")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault dice (0: time-based)")
	fs.IntVar(&cfg.CropCache, "crop-cache", 0, "memoize this many crops by (image, size); for benchmarks (0: off)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: cropq-dev emulator [--addr HOST:PORT] [flags]

The LOCAL STAND-IN of the Image Cropping API, for development, tests and benchmarks.
It accepts the credentials in CROPQ_APP_KEY / CROPQ_APP_SECRET (the ones the client sends).
Counters: GET /_emulator/stats; POST /_emulator/reset; PUT /_emulator/faults (JSON).`)
		fs.PrintDefaults()
	}
	if err := wiring.ParseFlags(fs, args, stderr); err != nil {
		return err
	}
	appSecret, err := env.Secret("CROPQ_APP_SECRET")
	if err != nil {
		return err
	}
	cfg.AppKey, cfg.AppSecret = env.Get("CROPQ_APP_KEY"), appSecret
	if cfg.AppKey == "" || cfg.AppSecret == "" {
		return errors.New("CROPQ_APP_KEY and CROPQ_APP_SECRET must be set: the emulator accepts only those credentials")
	}
	log := wiring.NewLogger(env, stderr)
	cfg.Logger = log
	emu, err := cropapitest.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Warn("emulator: this is the LOCAL STAND-IN of the Image Cropping API, not the real (paid) API",
		"addr", ln.Addr().String(), "rate", cfg.Rate, "result_ttl", cfg.ResultTTL)
	fmt.Fprintf(stdout, "emulator listening on http://%s\n", ln.Addr())
	return wiring.ServeUntilDone(ctx, srv, ln, 5*time.Second)
}
