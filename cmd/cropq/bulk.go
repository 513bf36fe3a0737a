package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/cropq/cropq/internal/requestfile"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/tasks"
)

type bulkOptions struct {
	// batchID, priority and tenant apply to rows without their own.
	batchID  string
	priority string
	tenant   string
	chunk    int
	progress bool
}

// maxShownErrors bounds the per-row errors printed; the summary counts all.
const maxShownErrors = 50

// bulkEnqueue reads a .jsonl or .csv file and enqueues it chunk by chunk.
// It streams: memory holds one chunk, whatever the file's size.
func bulkEnqueue(ctx context.Context, prod *producer.Producer, path string, o bulkOptions, stdout, stderr io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--file: %w", err)
	}
	defer f.Close()
	var next func() (requestfile.Row, bool)
	format, err := requestfile.FormatOf(filepath.Ext(path))
	switch {
	case err != nil:
		return fmt.Errorf("--file %s: want a .jsonl or .csv file", path)
	case format == requestfile.JSONL:
		next = requestfile.JSONLRows(f)
	default:
		if next, err = requestfile.CSVRows(f); err != nil {
			return fmt.Errorf("--file %s: %w", path, err)
		}
	}
	if o.chunk <= 0 {
		o.chunk = 500
	}

	var bar *progressbar.ProgressBar
	if o.progress {
		size := int64(-1)
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
		// Progress by bytes read: the row count is unknown until the end.
		bar = progressbar.NewOptions64(size, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("enqueue"),
			progressbar.OptionShowBytes(true), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
	}
	counts := map[string]int{}
	shown := 0
	report := func(line int64, id string, err error) {
		if shown < maxShownErrors {
			fmt.Fprintf(stderr, "line %d (%s): %v\n", line, id, err)
		} else if shown == maxShownErrors {
			fmt.Fprintf(stderr, "… more errors are counted in the summary only\n")
		}
		shown++
	}
	start := time.Now()
	var chunk []requestfile.Row
	flush := func() {
		if len(chunk) == 0 {
			return
		}
		reqs := make([]tasks.Request, len(chunk))
		for i, r := range chunk {
			reqs[i] = r.Req
		}
		for i, res := range prod.EnqueueBatch(ctx, reqs) {
			counts[string(res.Outcome)]++
			if res.Err != nil {
				report(chunk[i].Line, res.RequestID, res.Err)
			}
		}
		chunk = chunk[:0]
		if bar != nil {
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				_ = bar.Set64(off)
			}
		}
	}
	rows := 0
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted after %d rows (run the same command again to resume): %w", rows, err)
		}
		r, ok := next()
		if !ok {
			break
		}
		rows++
		if r.Fatal {
			flush()
			return fmt.Errorf("--file %s, line %d: %w (the rows before it were loaded; fix the file and run the same command again)", path, r.Line, r.Err)
		}
		if r.Err != nil {
			counts[string(producer.Invalid)]++
			report(r.Line, r.Req.RequestID, r.Err)
			continue
		}
		if r.Req.BatchID == "" {
			r.Req.BatchID = o.batchID
		}
		if r.Req.Priority == "" {
			r.Req.Priority = o.priority
		}
		if r.Req.Tenant == "" {
			r.Req.Tenant = o.tenant
		}
		chunk = append(chunk, r)
		if len(chunk) >= o.chunk {
			flush()
		}
	}
	flush()
	if bar != nil {
		_ = bar.Finish()
	}
	took := time.Since(start)
	fmt.Fprintf(stdout, "%d rows in %s: %d enqueued, %d already known (skipped), %d conflict, %d invalid, %d error\n",
		rows, took.Round(time.Millisecond), counts["enqueued"], counts["known"], counts["conflict"], counts["invalid"], counts["error"])
	if n := counts["conflict"] + counts["invalid"] + counts["error"]; n > 0 {
		return exitError{code: 2, err: fmt.Errorf("%d of %d rows were not enqueued (see above)", n, rows)}
	}
	return nil
}
