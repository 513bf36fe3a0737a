package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"time"

	"github.com/cropq/cropq/cmd/internal/wiring"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/tasks"
)

func runReplay(ctx context.Context, env wiring.Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq replay", flag.ContinueOnError)
	batch := nonEmpty(fs, "batch", "the batch whose failed requests are sent again")
	code := nonEmpty(fs, "code", "only those that failed with this error code (900, http_404, key_taken…)")
	tenant := nonEmpty(fs, "tenant", "only this tenant's (batch ids are each tenant's own: with --batch, the batch's tenant; default: every tenant)")
	since := nonEmpty(fs, "since", "only those that failed at or after this time (RFC 3339, e.g. 2026-12-06T09:00:00Z, or a duration ago, e.g. 2h)")
	until := nonEmpty(fs, "until", "only those that failed before this time (RFC 3339 or a duration ago)")
	dryRun := fs.Bool("dry-run", false, "say how many requests match, and change nothing")
	all := fs.Bool("all", false, "every failed request (required when no other filter is given)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq replay --batch ID [--code C] [--tenant T] [--since T] [--until T] [--dry-run]\n       cropq replay --all [--dry-run]\n\nSends failed requests again: each goes back to queued in its own lane and tenant, keeps its id\nand history, and its batch's counts move back. Audited, and idempotent.")
		fs.PrintDefaults()
	}
	if err := wiring.ParseFlags(fs, args, stderr); err != nil {
		return err
	}
	f := producer.ReplayFilter{BatchID: *batch, Code: *code, Tenant: *tenant}
	var errs []error
	if f.BatchID != "" {
		if err := tasks.ValidateBatchID(f.BatchID); err != nil {
			errs = append(errs, fmt.Errorf("--batch: %w", err))
		}
	}
	if f.Tenant != "" {
		if err := tasks.ValidateTenant(f.Tenant); err != nil {
			errs = append(errs, fmt.Errorf("--tenant: %w", err))
		}
	}
	now := time.Now()
	var err error
	if f.Since, err = parseWhen(*since, now); err != nil {
		errs = append(errs, fmt.Errorf("--since: %w", err))
	}
	if f.Until, err = parseWhen(*until, now); err != nil {
		errs = append(errs, fmt.Errorf("--until: %w", err))
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		errs = append(errs, errors.New("--until must be after --since"))
	}
	if f == (producer.ReplayFilter{}) && !*all {
		errs = append(errs, errors.New("no filter: give --batch (and --code, --tenant, --since, --until), or --all to replay every failed request"))
	}
	if err := errors.Join(errs...); err != nil {
		fs.Usage()
		return err
	}
	cfg, rdb, err := wiring.Connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	prod := producer.New(rdb, producer.Config{Status: cfg.Status, Task: cfg.Task, Backlog: true})
	defer prod.Close()
	res, err := prod.Replay(ctx, f, *dryRun, "cli "+whoami())
	if err != nil {
		return err
	}
	verb := "replayed"
	if *dryRun {
		verb = "would replay"
	}
	fmt.Fprintf(stdout, "%d failed requests match; %s %d", res.Matched, verb, res.Matched-res.NotReplayable)
	if !*dryRun {
		fmt.Fprintf(stdout, " (%d sent again, %d already replayed)", res.Replayed, res.Skipped)
	}
	if res.NotReplayable > 0 {
		fmt.Fprintf(stdout, "; %d cannot be sent again (their base64 image is gone)", res.NotReplayable)
	}
	fmt.Fprintf(stdout, "; they had cost %d paid calls\n", res.PaidCalls)
	return nil
}

// parseWhen reads a time as RFC 3339, or as a duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-12-06T09:00:00Z) nor a duration ago (2h)", s)
}

// whoami names the operator for the replay's audit.
func whoami() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// nonEmpty is a string flag that refuses "" (absent is spelt by leaving
// the flag out: an empty filter would choose every failure) and being
// given twice.
func nonEmpty(fs *flag.FlagSet, name, usage string) *string {
	var v string
	set := false
	fs.Func(name, usage, func(s string) error {
		switch {
		case set:
			return fmt.Errorf("--%s is given more than once", name)
		case s == "":
			return fmt.Errorf("--%s must not be empty (leave the flag out instead)", name)
		}
		v, set = s, true
		return nil
	})
	return &v
}
