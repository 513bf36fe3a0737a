package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cropq/cropq/cmd/internal/wiring"
	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/internal/monitor"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/webui"
	"github.com/cropq/cropq/tasks"
)

func runAPI(ctx context.Context, env wiring.Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq api", flag.ContinueOnError)
	addr := fs.String("addr", "", "listen address (default CROPQ_API_ADDR)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: cropq api [--addr HOST:PORT]

Serves the HTTP API for producers (OpenAPI document at /openapi.json).
Bearer tokens: CROPQ_API_TOKENS, entries tenant:token (a bare token, without
':', is tenant default: the operators'); a token submits, reads and cancels
for its own tenant only. /metrics needs an operator's token, or is served
without one on CROPQ_API_METRICS_ADDR (for the cluster's scraper).
Configuration: see 'cropq env'.`)
		fs.PrintDefaults()
	}
	if err := wiring.ParseFlags(fs, args, stderr); err != nil {
		return err
	}
	cfg, err := wiring.LoadConfig(env)
	if err != nil {
		return err
	}
	// A malformed token entry stops the API before it connects anywhere.
	if _, err := httpapi.ParseTokens(cfg.HTTP.Tokens); err != nil {
		return wiring.EnvContext(err)
	}
	rdb, err := wiring.OpenRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if *addr != "" {
		cfg.HTTPAddr = *addr
	}
	log := wiring.NewLogger(env, stderr)
	tp, log, err := wiring.StartTracing(ctx, &cfg, "cropq-api", stdout, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("api: tracing", "err", err)
		}
	}()
	prod, err := wiring.NewProducer(ctx, cfg, rdb, log)
	if err != nil {
		return err
	}
	defer prod.Close()
	hcfg := cfg.HTTP
	hcfg.Logger = log
	hcfg.TracerProvider = cfg.TracerProvider
	api, err := httpapi.New(prod, hcfg)
	if err != nil {
		return wiring.EnvContext(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", api)
	// The operators' view on the same port: the asynq web UI, readiness and
	// metrics.
	connOpt, err := wiring.AsynqConnOpt(cfg.RedisURL)
	if err != nil {
		return err
	}
	mcfg := monitor.Config{RedisConnOpt: connOpt, ReadOnly: cfg.MonitorReadOnly, PrometheusURL: cfg.PrometheusURL, Authorize: operator(api)}
	if !cfg.MonitorAuth {
		log.Warn("api: the web UI at /monitoring is open to anyone who can reach it (CROPQ_MONITOR_AUTH=false)")
		mcfg.Authorize = nil
	}
	ui := monitor.New(mcfg)
	defer ui.Close()
	mux.Handle(ui.RootPath()+"/", ui)
	reg := metrics.NewRegistry()
	metrics.RegisterQueues(reg, asynq.NewInspectorFromRedisClient(rdb))
	inputs, err := wiring.NewInputs(ctx, cfg)
	if err != nil {
		return err
	}
	writable := records.NewStore(rdb, cfg.Status).Writable
	metrics.RegisterRedisWritable(reg, writable)
	page, err := wiring.NewWebUI(ctx, cfg, rdb, prod, api, reg, log)
	if err != nil {
		return err
	}
	mux.Handle(webui.Root, page)
	ops := metrics.Health{Registry: reg, Ready: func(ctx context.Context) error {
		if err := writable(ctx); err != nil {
			return err
		}
		if err := inputs.CheckBucket(ctx); err != nil {
			return fmt.Errorf("s3 inputs bucket: %w", err)
		}
		return nil
	}}.Handler()
	// Probes need no token, and readiness names no tenant's data; the
	// metrics do (each tenant's backlog), so on this port, which tenants
	// reach, only an operator reads them.
	mux.Handle("GET /readyz", ops)
	mux.Handle("GET /metrics", operatorOnly(api, ops))
	if cfg.APIMetricsAddr != "" {
		stop, err := serveOps(cfg.APIMetricsAddr, ops, log)
		if err != nil {
			return fmt.Errorf("CROPQ_API_METRICS_ADDR: %w", err)
		}
		defer stop()
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute, // a batch of base64 images is large
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	log.Info("api: listening", "addr", ln.Addr().String(), "tokens_per_tenant", tokenCounts(api), "max_batch", hcfg.MaxBatch,
		"monitoring", ui.RootPath(), "monitoring_read_only", cfg.MonitorReadOnly, "ui", webui.Root, "metrics_addr", cfg.APIMetricsAddr)
	fmt.Fprintf(stdout, "api listening on http://%s\n", ln.Addr())
	fmt.Fprintf(stdout, "web UI on http://%s%s (a token of CROPQ_API_TOKENS as the password)\n", ln.Addr(), webui.Root)
	return wiring.ServeUntilDone(ctx, srv, ln, 20*time.Second)
}

// tokenCounts is what start-up says of the tokens: each tenant and how
// many tokens it has ("acme=2 default=1"), never a token.
func tokenCounts(api *httpapi.API) string {
	counts := api.Tenants()
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s=%d", t, counts[t]))
	}
	return strings.Join(parts, " ")
}

// operatorOnly serves h to an operator's token (see operator): none is
// 401, a tenant's 403.
func operatorOnly(api *httpapi.API, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, ok := api.Tenant(r)
		switch {
		case !ok:
			w.Header().Set("WWW-Authenticate", `Bearer realm="cropq"`)
			http.Error(w, "an operator's bearer token is required", http.StatusUnauthorized)
		case tenant != tasks.DefaultTenant:
			http.Error(w, "an operator's token is required: a tenant's token does not read the metrics", http.StatusForbidden)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// operator admits to the web UI the tokens of the default tenant only (bare
// tokens in CROPQ_API_TOKENS): the UI shows and, unless read-only, changes
// every tenant's tasks, so a tenant's own token does not open it.
func operator(api *httpapi.API) func(*http.Request) bool {
	return func(r *http.Request) bool {
		tenant, ok := api.Tenant(r)
		return ok && tenant == tasks.DefaultTenant
	}
}
