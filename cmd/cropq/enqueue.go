package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cropq/cropq/backlog"
	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

func runEnqueue(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq enqueue", flag.ContinueOnError)
	// One flag per field of the request model (tasks.Request), so the CLI
	// takes what the HTTP API and the bulk files take.
	var p tasks.Request
	var fieldErr error
	given := map[string]int{}
	for _, f := range tasks.Fields() {
		if f.Flag == "" {
			continue
		}
		fs.Func(f.Flag, f.Help, func(v string) error {
			given[f.Flag]++
			var err error
			key, _, _ := strings.Cut(v, "=")
			switch _, dup := p.Metadata[key]; {
			case f.Kind != reflect.Map && given[f.Flag] > 1:
				// Like a JSON member given twice: refused, not last-wins.
				err = &cropapi.ValidationError{Field: f.Name, Reason: fmt.Sprintf("--%s is given more than once", f.Flag)}
			case f.Kind == reflect.Map && dup:
				err = &cropapi.ValidationError{Field: f.Name, Reason: fmt.Sprintf("--%s names key %q twice", f.Flag, key)}
			default:
				err = p.SetText(f.Name, v)
			}
			if err != nil {
				fieldErr = err
			}
			return err
		})
	}
	b64File := fs.String("base64-file", "", "source image file, sent as base64 (a file holding base64 text is used as is)")
	file := fs.String("file", "", "bulk: a .jsonl or .csv file of requests (see README); --batch applies to rows without one")
	chunk := fs.Int("chunk", 500, "bulk: requests per pipelined batch")
	workers := fs.Int("concurrency", 0, "bulk: enqueues in flight (default CROPQ_ENQUEUE_CONCURRENCY)")
	noProgress := fs.Bool("no-progress", false, "bulk: no progress bar")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: cropq enqueue --request-id ID (--url URL | --base64-file FILE) --width W --height H [--batch ID] [--callback-url URL]
                     [--bucket B] [--key-template T] [--metadata k=v ...]
       cropq enqueue --file items.jsonl|items.csv [--batch ID] [--concurrency N]

A request id that is already known with the same parameters is skipped (and counted), so a bulk
load that was interrupted can simply be run again.`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		if fieldErr != nil {
			return fieldErr // names the field, e.g. "targetWidth: must be an integer"
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: every value is given with its flag (see cropq enqueue -h)", fs.Arg(0))
	}
	if *file != "" {
		// A bulk file holds its requests' parameters; only these apply to
		// its rows, as defaults.
		for name := range given {
			if name != "batch" && name != "priority" && name != "tenant" {
				return fmt.Errorf("--%s applies to one request: with --file, give it as a column of the file (--batch, --priority and --tenant are defaults for rows without one)", name)
			}
		}
		if *b64File != "" {
			return errors.New("--base64-file applies to one request: with --file, give imageBase64 as a column of the file")
		}
		// The defaults are checked once, not row by row.
		if err := (tasks.Request{Priority: p.Priority, Tenant: p.Tenant}).ValidateDefaults(); err != nil {
			return err
		}
	}
	cfg, rdb, err := connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if *workers > 0 {
		cfg.EnqueueWorkers = *workers
	}
	prod, err := newProducer(ctx, cfg, rdb, nil)
	if err != nil {
		return err
	}
	defer prod.Close()

	if *file != "" {
		return bulkEnqueue(ctx, prod, *file, bulkOptions{batchID: p.BatchID, priority: p.Priority, tenant: p.Tenant,
			chunk: *chunk, progress: !*noProgress}, stdout, stderr)
	}
	if *b64File != "" {
		raw, err := os.ReadFile(*b64File)
		if err != nil {
			return fmt.Errorf("--base64-file: %w", err)
		}
		p.ImageBase64 = imageBase64(raw)
	}
	res := prod.Enqueue(ctx, p)
	switch res.Outcome {
	case producer.Enqueued:
		fmt.Fprintf(stdout, "%s\tqueued\n", p.RequestID)
	case producer.Known:
		fmt.Fprintf(stdout, "%s\talready known (not enqueued again)\n", p.RequestID)
	default:
		return res.Err
	}
	return nil
}

// imageBase64 returns raw as base64, unless it already is base64 text.
func imageBase64(raw []byte) string {
	if _, err := base64.StdEncoding.DecodeString(string(raw)); err == nil && len(raw) > 0 {
		return string(raw)
	}
	return base64.StdEncoding.EncodeToString(raw)
}

func runStatus(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the whole record as JSON")
	showQuota := fs.Bool("quota", false, "print the fleet's shared API quota (ceiling, effective rate) and the paid calls saved by result reuse, as JSON, instead")
	showBacklog := fs.Bool("backlog", false, "print the backlog per lane and tenant (length, oldest age) instead")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq status REQUEST_ID [--json]\n       cropq status --quota\n       cropq status --backlog [--json]")
		fs.PrintDefaults()
	}
	// Accept the id before or after the flags.
	var id string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		id, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	if *showQuota {
		return printQuota(ctx, env, stdout)
	}
	if *showBacklog {
		return printBacklog(ctx, env, stdout, *asJSON)
	}
	if err := tasks.ValidateRequestID(id); err != nil {
		fs.Usage()
		return err
	}
	cfg, rdb, err := connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	rec, err := status.NewStore(rdb, cfg.Status).Get(ctx, id)
	if errors.Is(err, status.ErrNotFound) {
		return exitError{code: 3, err: fmt.Errorf("request %s: not found", id)}
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rec)
	}
	fmt.Fprintf(stdout, "%s\t%s\tattempt %d", rec.RequestID, rec.State, rec.Attempt)
	if rec.Stored != nil {
		fmt.Fprintf(stdout, "\ts3://%s/%s", rec.Stored.Bucket, rec.Stored.Key)
	}
	if rec.ErrorCode != "" {
		fmt.Fprintf(stdout, "\t%s: %s", rec.ErrorCode, rec.ErrorMessage)
	}
	fmt.Fprintln(stdout)
	return nil
}

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }
func (e exitError) ExitCode() int { return e.code }

// printQuota prints the shared quota of the configured account.
func printQuota(ctx context.Context, env Env, stdout io.Writer) error {
	cfg, rdb, err := connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st, err := quota.New(rdb, cfg.Quota).State(ctx)
	if err != nil {
		return err
	}
	// Calls the fleet did not pay for (result reuse and coalescing) are
	// quota it kept.
	saved, err := dedup.New(rdb, cfg.Dedup).Saved(ctx)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		quota.State
		CallsSaved map[string]int64 `json:"callsSaved"`
	}{st, saved})
}

// printBacklog prints what waits in the backlog, lanes in order.
func printBacklog(ctx context.Context, env Env, stdout io.Writer, asJSON bool) error {
	cfg, rdb, err := connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	stats, err := newBacklog(cfg, rdb).Stats(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	if asJSON {
		type row struct {
			backlog.Stat
			OldestAgeSeconds float64 `json:"oldestAgeSeconds"`
		}
		out := []row{}
		for _, st := range stats {
			out = append(out, row{st, now.Sub(st.Oldest).Seconds()})
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LANE\tTENANT\tWAITING\tOLDEST")
	var total int64
	for _, st := range stats {
		total += st.Len
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", st.Lane, st.Tenant, st.Len, now.Sub(st.Oldest).Round(time.Second))
	}
	fmt.Fprintf(tw, "total\t\t%d\t\n", total)
	return tw.Flush()
}
