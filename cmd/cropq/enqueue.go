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

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/quota"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

func runEnqueue(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq enqueue", flag.ContinueOnError)
	var p tasks.CropPayload
	fs.StringVar(&p.RequestID, "request-id", "", "request id (required; 1–128 of A-Z a-z 0-9 . _ : -)")
	fs.StringVar(&p.ImageURL, "url", "", "source image URL")
	b64File := fs.String("base64-file", "", "source image file, sent as base64 (a file holding base64 text is used as is)")
	fs.IntVar(&p.TargetWidth, "width", 0, "target width in pixels (100–5000)")
	fs.IntVar(&p.TargetHeight, "height", 0, "target height in pixels (100–5000)")
	fs.StringVar(&p.Bucket, "bucket", "", "destination bucket (default CROPQ_S3_BUCKET)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq enqueue --request-id ID (--url URL | --base64-file FILE) --width W --height H")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *b64File != "" {
		raw, err := os.ReadFile(*b64File)
		if err != nil {
			return fmt.Errorf("--base64-file: %w", err)
		}
		p.ImageBase64 = imageBase64(raw)
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	rdb, err := openRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	res, err := enqueue(ctx, rdb, cfg, p)
	if err != nil {
		return err
	}
	state := "queued"
	if res.Known {
		state = "already known (not enqueued again)"
	}
	fmt.Fprintf(stdout, "%s\t%s\n", p.RequestID, state)
	return nil
}

// imageBase64 returns raw as base64, unless it already is base64 text.
func imageBase64(raw []byte) string {
	if _, err := base64.StdEncoding.DecodeString(string(raw)); err == nil && len(raw) > 0 {
		return string(raw)
	}
	return base64.StdEncoding.EncodeToString(raw)
}

type enqueueResult struct {
	Known bool // the request id was already known: nothing new was enqueued
}

// enqueue validates p, writes its "queued" record, then enqueues it with the
// request id as task id. The record is the idempotency key: an id that has a
// record is known and is not enqueued (nor paid for) again, whatever asynq's
// retention; a queued record whose task is missing (a producer that died
// between the two writes) gets its task.
func enqueue(ctx context.Context, rdb redis.UniversalClient, cfg config, p tasks.CropPayload) (enqueueResult, error) {
	task, opts, err := tasks.NewCropTask(p, cfg.Task)
	if err != nil {
		return enqueueResult{}, err
	}
	st := status.NewStore(rdb, cfg.Status)
	rec, created, err := st.Create(ctx, status.Record{RequestID: p.RequestID, TargetWidth: p.TargetWidth, TargetHeight: p.TargetHeight,
		Source: p.Source(), SourceURL: p.ImageURL, BatchID: p.BatchID})
	if err != nil {
		return enqueueResult{}, fmt.Errorf("record %s: %w", p.RequestID, err)
	}
	if !created && rec.State != status.Queued {
		return enqueueResult{Known: true}, nil
	}
	_, err = newAsynqClient(rdb).EnqueueContext(ctx, task, opts...)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return enqueueResult{Known: true}, nil
	case err != nil && created:
		// Leave nothing half-done: without its task the record would lie.
		if derr := st.Delete(context.WithoutCancel(ctx), p.RequestID); derr != nil {
			err = errors.Join(err, derr)
		}
		return enqueueResult{}, fmt.Errorf("enqueue %s: %w", p.RequestID, err)
	case err != nil:
		return enqueueResult{}, fmt.Errorf("enqueue %s: %w", p.RequestID, err)
	}
	return enqueueResult{Known: !created}, nil
}

func runStatus(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cropq status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the whole record as JSON")
	showQuota := fs.Bool("quota", false, "print the fleet's shared API quota (ceiling, effective rate) as JSON instead")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cropq status REQUEST_ID [--json]\n       cropq status --quota")
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
	if err := tasks.ValidateRequestID(id); err != nil {
		fs.Usage()
		return err
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	rdb, err := openRedis(ctx, cfg.RedisURL)
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
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	rdb, err := openRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st, err := quota.New(rdb, cfg.Quota).State(ctx)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}
