// Command cropq crops product images at scale through the Image Cropping API.
//
//	cropq worker     process crop tasks
//	cropq enqueue    enqueue one crop
//	cropq status     print the status of a request id
//	cropq emulator   run the local stand-in of the Image Cropping API
//	cropq dev        run the whole system locally and crop the sample images
//	cropq env        list the environment variables cropq reads
//
// Configuration comes from CROPQ_* environment variables (and the standard
// AWS_* ones), each overridable by a flag; this package is the only place
// that reads them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"worker", "process crop tasks from the queue", runWorker},
		{"enqueue", "enqueue one crop request, or a .jsonl/.csv file of them", runEnqueue},
		{"status", "print the status record of a request id, or the shared quota", runStatus},
		{"wait", "follow a request or a batch until it is done", runWait},
		{"api", "serve the HTTP API for producers", runAPI},
		{"emulator", "run the local stand-in of the Image Cropping API", runEmulator},
		{"dev", "run the whole system locally and crop the sample images", runDev},
		{"env", "list the environment variables cropq reads, with defaults", runEnv},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, OSEnv(), os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: tests call it.
func run(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "cropq %s: %v\n", c.name, err)
			var ec exitCoder
			if errors.As(err, &ec) {
				return ec.ExitCode()
			}
			return 1
		}
	}
	fmt.Fprintf(stderr, "cropq: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: cropq <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'cropq <command> --help' for the flags of a command, 'cropq env' for the environment.")
}

// errUsage is returned after a flag error was already printed.
var errUsage = errors.New("usage")

type exitCoder interface{ ExitCode() int }

// newLogger builds the process logger: JSON in production, text in dev.
func newLogger(env Env, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(env.Get("CROPQ_LOG_LEVEL")))
	opts := &slog.HandlerOptions{Level: level}
	if env.Get("CROPQ_LOG_FORMAT") == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
