// Package requestfile holds the format of a file of crop requests, the one
// `cropq enqueue --file` loads and a manifest (an object in S3 a batch is
// fed from) holds: JSONL, one request per line as the HTTP API's body, or
// CSV whose header names the request model's fields.
//
// It parses a line at a time, so a reader may keep its own cursor (a byte
// offset and a line number) and resume anywhere at a line's start.
package requestfile

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/strictjson"
	"github.com/cropq/cropq/tasks"
)

// Format is how a file holds its requests.
type Format string

const (
	JSONL Format = "jsonl"
	CSV   Format = "csv"
)

// FormatOf is the format of a file or object named name, by its extension
// (.jsonl, .ndjson or .csv).
func FormatOf(name string) (Format, error) {
	lower := strings.ToLower(name)
	switch {
	case strings.HasSuffix(lower, ".jsonl"), strings.HasSuffix(lower, ".ndjson"):
		return JSONL, nil
	case strings.HasSuffix(lower, ".csv"):
		return CSV, nil
	}
	return "", fmt.Errorf("%s: want a .jsonl or .csv file", name)
}

// Row is one request of a file, or why it could not be read.
type Row struct {
	Line int64 // 1-based
	Req  tasks.Request
	Err  error
	// Fatal: the file itself cannot be read on.
	Fatal bool
}

// ParseJSON reads one JSONL line (the HTTP API's body, decoded as
// strictly). Its error names the field as the HTTP API does.
func ParseJSON(text []byte) (tasks.Request, error) {
	var c tasks.Request
	if err := strictjson.Unmarshal(text, &c); err != nil {
		return tasks.Request{RequestID: c.RequestID}, requestError(err)
	}
	return c, nil
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

// Columns are the accepted CSV header names: the request model's fields.
func Columns() []string {
	var out []string
	for _, f := range tasks.Fields() {
		out = append(out, f.Name)
	}
	return out
}

// Header is a CSV file's header, read: the column of each field.
type Header struct {
	Names []string // as in the file
	col   map[string]int
}

// ParseHeader reads a CSV header's cells.
func ParseHeader(cells []string) (Header, error) {
	cols := Columns()
	h := Header{col: map[string]int{}}
	for i, c := range cells {
		c = strings.TrimSpace(strings.TrimPrefix(c, "\ufeff"))
		if !slices.Contains(cols, c) {
			return Header{}, fmt.Errorf("unknown column %q (columns: %s)", c, strings.Join(cols, ", "))
		}
		if _, dup := h.col[c]; dup {
			return Header{}, fmt.Errorf("column %q appears twice", c)
		}
		h.col[c] = i
		h.Names = append(h.Names, c)
	}
	for _, need := range []string{"requestId", "targetWidth", "targetHeight"} {
		if _, ok := h.col[need]; !ok {
			return Header{}, fmt.Errorf("missing column %q", need)
		}
	}
	return h, nil
}

// ParseCSVHeaderLine reads a header from one line of text.
func ParseCSVHeaderLine(text []byte) (Header, error) {
	cells, err := csv.NewReader(bytes.NewReader(text)).Read()
	if err != nil {
		return Header{}, fmt.Errorf("read header: %w", err)
	}
	return ParseHeader(cells)
}

// Request reads one CSV record's cells; a metadata cell is a JSON object
// of strings. The error names the field.
func (h Header) Request(cells []string) (tasks.Request, error) {
	var p tasks.Request
	for _, name := range h.Names {
		i := h.col[name]
		if i >= len(cells) {
			continue
		}
		// Cells are taken as they are, like JSON strings (numbers may be
		// padded), so a request reads the same from CSV and JSON.
		cell := cells[i]
		if cell == "" && name != "targetWidth" && name != "targetHeight" {
			continue
		}
		if err := p.SetText(name, cell); err != nil {
			return p, err
		}
	}
	return p, nil
}

// ParseCSVLine reads one CSV line: a record on one line (a quoted cell
// holding a line break is split by a line reader, and its halves refused
// as unparseable).
func (h Header) ParseCSVLine(text []byte) (tasks.Request, error) {
	cr := csv.NewReader(bytes.NewReader(text))
	cr.FieldsPerRecord = -1
	cells, err := cr.Read()
	if err != nil {
		return tasks.Request{}, fmt.Errorf("csv: %w", err)
	}
	if _, err := cr.Read(); !errors.Is(err, io.EOF) {
		return tasks.Request{}, errors.New("csv: more than one record on a line")
	}
	return h.Request(cells)
}

// JSONLRows reads one JSON crop request per line; blank lines are skipped.
func JSONLRows(r io.Reader) func() (Row, bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes) // a line may hold a base64 image
	var line int64
	return func() (Row, bool) {
		for sc.Scan() {
			line++
			text := bytes.TrimSpace(sc.Bytes())
			if len(text) == 0 {
				continue
			}
			req, err := ParseJSON(text)
			return Row{Line: line, Req: req, Err: err}, true
		}
		if err := sc.Err(); err != nil {
			return Row{Line: line + 1, Err: fmt.Errorf("read: %w", err), Fatal: true}, true
		}
		return Row{}, false
	}
}

// MaxLineBytes bounds one line (a line may hold a base64 image).
const MaxLineBytes = 64 << 20

// CSVRows reads a CSV file whose header names the columns (Columns).
func CSVRows(r io.Reader) (func() (Row, bool), error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	cells, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	h, err := ParseHeader(cells)
	if err != nil {
		return nil, err
	}
	var line int64 = 1
	return func() (Row, bool) {
		rec, err := cr.Read()
		line++
		if errors.Is(err, io.EOF) {
			return Row{}, false
		}
		var perr *csv.ParseError
		switch {
		case errors.As(err, &perr):
			return Row{Line: line, Err: fmt.Errorf("csv: %w", err)}, true
		case err != nil:
			return Row{Line: line, Err: fmt.Errorf("read: %w", err), Fatal: true}, true
		}
		req, err := h.Request(rec)
		return Row{Line: line, Req: req, Err: err}, true
	}, nil
}
