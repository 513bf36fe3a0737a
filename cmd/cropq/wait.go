package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/cropq/cropq/cmd/internal/wiring"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// runWait follows a request or a batch until it is done, printing each
// change; the exit code says how it ended.
func runWait(ctx context.Context, env wiring.Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq wait", flag.ContinueOnError)
	batch := fs.String("batch", "", "follow a batch instead of one request")
	tenant := fs.String("tenant", "", "the batch's tenant (default: the default tenant)")
	interval := fs.Duration("interval", time.Second, "how often to look")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: never)")
	noProgress := fs.Bool("no-progress", false, "batch: no progress bar (on stderr)")
	report := fs.String("report", "", "batch: when it is done, write its report to this file (one JSON line per request)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: cropq wait REQUEST_ID | cropq wait --batch BATCH_ID [--report FILE]

Exit status: 0 when everything succeeded, 4 when something failed or was
canceled, 5 on --timeout, 3 when the request or batch is unknown. The
report is written whichever way the batch ended.`)
		fs.PrintDefaults()
	}
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := wiring.ParseFlags(fs, args, stderr); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	if (id == "") == (*batch == "") {
		fs.Usage()
		return wiring.ErrUsage
	}
	if *report != "" && *batch == "" {
		return fmt.Errorf("--report: a report is a batch's: give --batch")
	}
	target := id
	if *batch != "" {
		target = *batch
	}
	if err := tasks.ValidateRequestID(target); err != nil {
		return err
	}
	if *tenant != "" {
		if err := tasks.ValidateTenant(*tenant); err != nil {
			return err
		}
	}
	cfg, rdb, err := wiring.Connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := records.NewStore(rdb, cfg.Status)
	// The producer reads batches with their estimate (backlog, weights, rate).
	pcfg := producer.Config{Status: cfg.Status, Backlog: true, Weights: cfg.TenantWeights, Rate: quota.FleetRate(rdb, cfg.Quota, cfg.QuotaShared)}
	if len(cfg.Budget.Caps) > 0 {
		pcfg.Budgets = budget.New(rdb, cfg.Budget)
	}
	prod := producer.New(rdb, pcfg)
	defer prod.Close()
	var bar *progressbar.ProgressBar
	if *batch != "" && !*noProgress {
		bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("batch "+*batch),
			progressbar.OptionShowCount(), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish(),
			progressbar.OptionSetPredictTime(false)) // our estimate, not the bar's extrapolation
		defer func() { _ = bar.Finish() }()
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	last := ""
	for {
		var line string
		var done, ok bool
		var err error
		if *batch == "" {
			line, done, ok, err = look(ctx, st, id)
		} else {
			line, done, ok, err = lookBatch(ctx, prod, *tenant, *batch, bar)
		}
		switch {
		case errors.Is(err, status.ErrNotFound):
			return exitError{code: 3, err: fmt.Errorf("%s: not found", target)}
		case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
			// The deadline ended the look itself: a timeout all the same.
			return exitError{code: 5, err: fmt.Errorf("%s: not done after %s", target, *timeout)}
		case err != nil:
			return err
		}
		if line != last {
			fmt.Fprintln(stdout, line)
			last = line
		}
		if done {
			if *report != "" {
				if err := writeReport(ctx, prod, *tenant, *batch, *report); err != nil {
					return err
				}
			}
			if !ok {
				return exitError{code: 4, err: fmt.Errorf("%s: did not all succeed", target)}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return exitError{code: 5, err: fmt.Errorf("%s: not done after %s", target, *timeout)}
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// look returns a request's progress line, whether it is over, and whether
// it succeeded.
func look(ctx context.Context, st *records.Store, id string) (line string, done, ok bool, err error) {
	rec, err := st.Get(ctx, id)
	if err != nil {
		return "", false, false, err
	}
	line = fmt.Sprintf("%s\t%s\tattempt %d", rec.RequestID, rec.State, rec.Attempt)
	if rec.ErrorCode != "" {
		line += "\t" + rec.ErrorCode
	}
	if rec.Stored != nil {
		line += "\ts3://" + rec.Stored.Bucket + "/" + rec.Stored.Key
	}
	return line, rec.State.Terminal(), rec.State == status.Succeeded, nil
}

// lookBatch returns a batch's progress line (without the estimate, so that
// it changes only when the counts do), moves the bar with the estimate, and
// says whether the batch is over and all succeeded.
func lookBatch(ctx context.Context, prod *producer.Producer, tenant, batch string, bar *progressbar.ProgressBar) (line string, done, ok bool, err error) {
	bi, err := prod.Batch(ctx, tenant, batch)
	if err != nil {
		return "", false, false, err
	}
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(bi.Counts)) {
		parts = append(parts, fmt.Sprintf("%s %d", s, bi.Counts[s]))
	}
	terminal := bi.Total - bi.Remaining
	line = fmt.Sprintf("batch %s: %d/%d done (%s)", batch, terminal, bi.Total, strings.Join(parts, ", "))
	if bi.Saved > 0 {
		line += fmt.Sprintf(", %d paid calls saved", bi.Saved)
	}
	if m := bi.Manifest; m != nil && m.State != "done" {
		line += fmt.Sprintf("; manifest %s, %d lines read", m.State, m.Lines)
		if m.Code != "" {
			line += fmt.Sprintf(" (%s: %s)", m.Code, m.Message)
		}
	}
	if bi.Waiting == producer.WaitingForBudget {
		line += ", waiting for the tenant's budget"
		if !bi.ResumesAt.IsZero() {
			line += " until " + bi.ResumesAt.UTC().Format(time.RFC3339)
		}
	}
	if bi.Unchanged > 0 {
		line += fmt.Sprintf(" (%d unchanged at their destination)", bi.Unchanged)
	}
	if bar != nil {
		bar.ChangeMax64(bi.Total)
		eta := "ETA unknown"
		if bi.ETA >= 0 {
			eta = "ETA " + bi.ETA.Round(time.Second).String()
		}
		bar.Describe(fmt.Sprintf("batch %s (%s) %s", batch, bi.Priority, eta))
		_ = bar.Set64(terminal)
	}
	return line, bi.Done, bi.Counts[status.Succeeded] == bi.Total, nil
}

// writeReport streams a done batch's report into path: into a file beside
// it first, renamed into place once whole, so that path never holds a
// partial report.
func writeReport(ctx context.Context, prod *producer.Producer, tenant, batch, path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	defer os.Remove(f.Name()) // gone once renamed
	// A report, not a secret: CreateTemp makes it 0600.
	_ = f.Chmod(0o644)
	_, err = prod.Report(ctx, tenant, batch, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("--report %s: %w", path, err)
	}
	return nil
}
