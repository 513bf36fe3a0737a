package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/cropq/cropq/cmd/internal/wiring"
	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/tasks"
)

func runEnqueue(ctx context.Context, env wiring.Env, args []string, stdout, stderr io.Writer) error {
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
			case f.NonEmpty && v == "":
				// As in JSON: absent is spelt by leaving the flag out.
				err = &cropapi.ValidationError{Field: f.Name, Reason: fmt.Sprintf("--%s must not be empty (leave the flag out instead)", f.Flag)}
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
	manifestURL := fs.String("manifest", "", "a manifest: s3://BUCKET/KEY of a .jsonl or .csv object the fleet reads as it needs lines (see docs/manifests.md); --batch defaults to a name derived from the key")
	chunk := fs.Int("chunk", 500, "bulk: requests per pipelined batch")
	workers := fs.Int("concurrency", 0, "bulk: enqueues in flight (default CROPQ_ENQUEUE_CONCURRENCY)")
	noProgress := fs.Bool("no-progress", false, "bulk: no progress bar")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: cropq enqueue --request-id ID (--url URL | --base64-file FILE) --width W --height H [--batch ID] [--callback-url URL]
                     [--bucket B] [--key-template T] [--metadata k=v ...]
       cropq enqueue --file items.jsonl|items.csv [--batch ID] [--concurrency N]
       cropq enqueue --manifest s3://BUCKET/KEY [--batch ID] [--priority P] [--tenant T]

A request id that is already known with the same parameters is skipped (and counted), so a bulk
load that was interrupted can simply be run again.`)
		fs.PrintDefaults()
	}
	if err := wiring.ParseFlags(fs, args, stderr); err != nil {
		if fieldErr != nil {
			return fieldErr // names the field, e.g. "targetWidth: must be an integer"
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: every value is given with its flag (see cropq enqueue -h)", fs.Arg(0))
	}
	if *file != "" && *manifestURL != "" {
		return errors.New("--file and --manifest: give one (a local file is loaded now, a manifest is read by the fleet)")
	}
	if *manifestURL != "" {
		for name := range given {
			if name != "batch" && name != "priority" && name != "tenant" {
				return fmt.Errorf("--%s applies to one request: with --manifest, give it as a column of the manifest (--batch, --priority and --tenant apply to the batch)", name)
			}
		}
		if *b64File != "" {
			return errors.New("--base64-file applies to one request: with --manifest, give imageBase64 as a column of the manifest")
		}
		if err := p.ValidateDefaults(); err != nil {
			return err
		}
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
		if err := p.ValidateDefaults(); err != nil {
			return err
		}
	}
	cfg, rdb, err := wiring.Connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if *workers > 0 {
		cfg.EnqueueWorkers = *workers
	}
	prod, err := wiring.NewProducer(ctx, cfg, rdb, nil)
	if err != nil {
		return err
	}
	defer prod.Close()

	if *manifestURL != "" {
		bi, err := prod.RegisterManifest(ctx, p.Tenant, producer.ManifestRequest{BatchID: p.BatchID, Manifest: *manifestURL, Priority: p.Priority})
		if err != nil {
			return err
		}
		id := p.BatchID
		if id == "" {
			id = producer.BatchIDOf(*manifestURL)
		}
		m := bi.Manifest
		fmt.Fprintf(stdout, "%s\tmanifest %s (%d bytes, ETag %s) registered: %s (follow it with cropq wait --batch %s)\n", id, m.URL, m.Size, m.ETag, m.State, id)
		return nil
	}
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
