package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// runWait follows a request or a batch until it is done, printing each
// change; the exit code says how it ended.
func runWait(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq wait", flag.ContinueOnError)
	batch := fs.String("batch", "", "follow a batch instead of one request")
	tenant := fs.String("tenant", "", "the batch's tenant (default: the default tenant)")
	interval := fs.Duration("interval", time.Second, "how often to look")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: never)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: cropq wait REQUEST_ID | cropq wait --batch BATCH_ID

Exit status: 0 when everything succeeded, 4 when something failed or was
canceled, 5 on --timeout, 3 when the request or batch is unknown.`)
		fs.PrintDefaults()
	}
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	if (id == "") == (*batch == "") {
		fs.Usage()
		return errUsage
	}
	target := id
	if *batch != "" {
		target = *batch
	}
	if err := tasks.ValidateRequestID(target); err != nil {
		return err
	}
	cfg, rdb, err := connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := status.NewStore(rdb, cfg.Status)
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	last := ""
	for {
		line, done, ok, err := look(ctx, st, id, *tenant, *batch)
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

// look returns a progress line, whether it is over, and whether all succeeded.
func look(ctx context.Context, st *status.Store, id, tenant, batch string) (line string, done, ok bool, err error) {
	if batch == "" {
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
	counts, err := st.BatchCounts(ctx, tenant, batch)
	if err != nil {
		return "", false, false, err
	}
	if len(counts) == 0 {
		return "", false, false, status.ErrNotFound
	}
	var total, terminal int64
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(counts)) {
		n := counts[s]
		total += n
		if s.Terminal() {
			terminal += n
		}
		parts = append(parts, fmt.Sprintf("%s %d", s, n))
	}
	line = fmt.Sprintf("batch %s: %d/%d done (%s)", batch, terminal, total, strings.Join(parts, ", "))
	return line, terminal == total, counts[status.Succeeded] == total, nil
}
