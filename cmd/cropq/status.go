package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/cropq/cropq/cmd/internal/wiring"
	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/dedup"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

func runStatus(ctx context.Context, env wiring.Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the whole record as JSON")
	showQuota := fs.Bool("quota", false, "print the fleet's shared API quota (ceiling, effective rate) and the paid calls saved by result reuse, as JSON, instead")
	showBacklog := fs.Bool("backlog", false, "print the backlog per lane and tenant (length, oldest age) instead")
	showBudget := fs.Bool("budget", false, "print each tenant's budget of paid calls (CROPQ_TENANT_BUDGETS): used this period, cap, when the next period opens")
	resolveRef := fs.String("resolve-ref", "", "print the request id a reusedFrom reference (ref/…) stands for: the request, of another tenant, whose result was reused")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq status REQUEST_ID [--json]\n       cropq status --quota\n       cropq status --backlog [--json]\n       cropq status --budget [--json]\n       cropq status --resolve-ref REF")
		fs.PrintDefaults()
	}
	// Accept the id before or after the flags.
	var id string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		id, args = args[0], args[1:]
	}
	if err := wiring.ParseFlags(fs, args, stderr); err != nil {
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
	if *showBudget {
		return printBudgets(ctx, env, stdout, *asJSON)
	}
	if *resolveRef != "" {
		return printResolved(ctx, env, stdout, *resolveRef)
	}
	if err := tasks.ValidateRequestID(id); err != nil {
		fs.Usage()
		return err
	}
	cfg, rdb, err := wiring.Connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	rec, err := records.NewStore(rdb, cfg.Status).Get(ctx, id)
	if errors.Is(err, status.ErrNotFound) {
		return exitError{code: 3, err: fmt.Errorf("request %s: not found", id)}
	}
	if err != nil {
		return err
	}
	if rec.State == status.Queued && len(cfg.Budget.Caps) > 0 {
		// As the API says it: read, not stored (producer.Get).
		if _, exhausted, _, err := budget.New(rdb, cfg.Budget).Until(ctx, rec.Tenant, 1); err == nil && exhausted {
			rec.Reason = producer.WaitingForBudget
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rec)
	}
	fmt.Fprintf(stdout, "%s\t%s\tattempt %d", rec.RequestID, rec.State, rec.Attempt)
	if rec.Reason != "" {
		fmt.Fprintf(stdout, "\twaiting for %s", rec.Reason)
	}
	if rec.Stored != nil {
		fmt.Fprintf(stdout, "\ts3://%s/%s", rec.Stored.Bucket, rec.Stored.Key)
	}
	if rec.ErrorCode != "" {
		fmt.Fprintf(stdout, "\t%s: %s", rec.ErrorCode, rec.ErrorMessage)
	}
	fmt.Fprintln(stdout)
	return nil
}

// printResolved prints the request a reusedFrom reference stands for (see
// dedup.Index.Conceal); exit code 3 when it is unknown or has expired.
func printResolved(ctx context.Context, env wiring.Env, stdout io.Writer, ref string) error {
	if !dedup.IsRef(ref) {
		return fmt.Errorf("--resolve-ref: %q is not a reference (ref/ and 20 hex digits)", ref)
	}
	cfg, rdb, err := wiring.Connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	id, found, err := dedup.New(rdb, cfg.Dedup).Resolve(ctx, ref)
	if err != nil {
		return err
	}
	if !found {
		return exitError{code: 3, err: fmt.Errorf("reference %s: not found (unknown, or older than CROPQ_DEDUP_TTL)", ref)}
	}
	fmt.Fprintln(stdout, id)
	return nil
}

// printQuota prints the shared quota of the configured account.
func printQuota(ctx context.Context, env wiring.Env, stdout io.Writer) error {
	cfg, rdb, err := wiring.Connect(ctx, env)
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
func printBacklog(ctx context.Context, env wiring.Env, stdout io.Writer, asJSON bool) error {
	cfg, rdb, err := wiring.Connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	stats, err := wiring.NewBacklog(cfg, rdb).Stats(ctx)
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

// printBudgets prints each budgeted tenant's paid calls this period.
func printBudgets(ctx context.Context, env wiring.Env, stdout io.Writer, asJSON bool) error {
	cfg, rdb, err := wiring.Connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	us, err := budget.New(rdb, cfg.Budget).Usages(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		if us == nil {
			us = []budget.Usage{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(us)
	}
	if len(us) == 0 {
		fmt.Fprintln(stdout, "no tenant has a budget (CROPQ_TENANT_BUDGETS is unset)")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tUSED\tCAP\tPERIOD\tNEXT PERIOD")
	for _, u := range us {
		state := ""
		if u.Exhausted() {
			state = "  (spent: work waits)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s%s\n", u.Tenant, u.Used, u.Cap, u.Period, u.Ends.Format(time.RFC3339), state)
	}
	return tw.Flush()
}
