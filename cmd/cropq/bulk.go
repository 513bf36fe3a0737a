package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/strictjson"
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

// row is one request of a bulk file, or why it could not be read.
type row struct {
	line int
	req  tasks.Request
	err  error
	// fatal: the file itself cannot be read on; the load stops here.
	fatal bool
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
	var next func() (row, bool)
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson":
		next = jsonlRows(f)
	case ".csv":
		if next, err = csvRows(f); err != nil {
			return fmt.Errorf("--file %s: %w", path, err)
		}
	default:
		return fmt.Errorf("--file %s: want a .jsonl or .csv file", path)
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
	report := func(line int, id string, err error) {
		if shown < maxShownErrors {
			fmt.Fprintf(stderr, "line %d (%s): %v\n", line, id, err)
		} else if shown == maxShownErrors {
			fmt.Fprintf(stderr, "… more errors are counted in the summary only\n")
		}
		shown++
	}
	start := time.Now()
	var chunk []row
	flush := func() {
		if len(chunk) == 0 {
			return
		}
		reqs := make([]tasks.Request, len(chunk))
		for i, r := range chunk {
			reqs[i] = r.req
		}
		for i, res := range prod.EnqueueBatch(ctx, reqs) {
			counts[string(res.Outcome)]++
			if res.Err != nil {
				report(chunk[i].line, res.RequestID, res.Err)
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
		if r.fatal {
			flush()
			return fmt.Errorf("--file %s, line %d: %w (the rows before it were loaded; fix the file and run the same command again)", path, r.line, r.err)
		}
		if r.err != nil {
			counts[string(producer.Invalid)]++
			report(r.line, r.req.RequestID, r.err)
			continue
		}
		if r.req.BatchID == "" {
			r.req.BatchID = o.batchID
		}
		if r.req.Priority == "" {
			r.req.Priority = o.priority
		}
		if r.req.Tenant == "" {
			r.req.Tenant = o.tenant
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

// jsonlRows reads one JSON crop request per line (the HTTP API's body,
// decoded as strictly).
func jsonlRows(r io.Reader) func() (row, bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20) // a line may hold a base64 image
	line := 0
	return func() (row, bool) {
		for sc.Scan() {
			line++
			text := bytes.TrimSpace(sc.Bytes())
			if len(text) == 0 {
				continue
			}
			var c tasks.Request
			if err := strictjson.Unmarshal(text, &c); err != nil {
				return row{line: line, req: tasks.Request{RequestID: c.RequestID}, err: requestError(err)}, true
			}
			return row{line: line, req: c}, true
		}
		if err := sc.Err(); err != nil {
			return row{line: line + 1, err: fmt.Errorf("read: %w", err), fatal: true}, true
		}
		return row{}, false
	}
}

// requestError turns a strict decoding error into a validation error
// naming the field, as the HTTP API reports it.
func requestError(err error) error {
	var je *strictjson.Error
	if errors.As(err, &je) && je.Field != "" {
		return &cropapi.ValidationError{Field: je.Field, Reason: je.Reason}
	}
	if je != nil {
		return fmt.Errorf("not a crop request: %s", je.Reason)
	}
	return fmt.Errorf("not a crop request: %w", err)
}

// csvColumns are the accepted CSV header names: the request model's fields.
func csvColumns() []string {
	var out []string
	for _, f := range tasks.Fields() {
		out = append(out, f.Name)
	}
	return out
}

// csvRows reads a CSV file whose header names the columns (csvColumns);
// a metadata cell is a JSON object of strings.
func csvRows(r io.Reader) (func() (row, bool), error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	cols := csvColumns()
	col := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if !slices.Contains(cols, h) {
			return nil, fmt.Errorf("unknown column %q (columns: %s)", h, strings.Join(cols, ", "))
		}
		if _, dup := col[h]; dup {
			return nil, fmt.Errorf("column %q appears twice", h)
		}
		col[h] = i
	}
	for _, need := range []string{"requestId", "targetWidth", "targetHeight"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("missing column %q", need)
		}
	}
	line := 1
	return func() (row, bool) {
		rec, err := cr.Read()
		line++
		if errors.Is(err, io.EOF) {
			return row{}, false
		}
		var perr *csv.ParseError
		switch {
		case errors.As(err, &perr):
			return row{line: line, err: fmt.Errorf("csv: %w", err)}, true
		case err != nil:
			return row{line: line, err: fmt.Errorf("read: %w", err), fatal: true}, true
		}
		var p tasks.Request
		for _, name := range cols {
			i, ok := col[name]
			if !ok || i >= len(rec) {
				continue
			}
			// Cells are taken as they are, like JSON strings (numbers may
			// be padded), so a request reads the same from CSV and JSON.
			cell := rec[i]
			if cell == "" && name != "targetWidth" && name != "targetHeight" {
				continue
			}
			if err := p.SetText(name, cell); err != nil {
				return row{line: line, req: p, err: err}, true
			}
		}
		return row{line: line, req: p}, true
	}, nil
}
