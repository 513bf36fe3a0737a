// Command cropq crops product images at scale through the Image Cropping API.
//
//	cropq worker     process crop tasks
//	cropq enqueue    enqueue one crop
//	cropq status     print the status of a request id
//	cropq wait       follow a request or a batch until it is done
//	cropq api        serve the HTTP API for producers
//	cropq env        list the environment variables cropq reads
//
// This is the production binary: the local stand-ins (the API emulator, the
// whole system on one machine) are cmd/cropq-dev, so that none of them is
// linked in here. Configuration comes from CROPQ_* environment variables (and
// the standard AWS_* ones), each overridable by a flag, read in cmd only
// (package cmd/internal/wiring).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cropq/cropq/cmd/internal/wiring"
)

func commands() []wiring.Command {
	return []wiring.Command{
		{Name: "worker", Summary: "process crop tasks from the queue", Run: runWorker},
		{Name: "enqueue", Summary: "enqueue one crop request, or a .jsonl/.csv file of them", Run: runEnqueue},
		{Name: "status", Summary: "print the status record of a request id, or the shared quota", Run: runStatus},
		{Name: "wait", Summary: "follow a request or a batch until it is done", Run: runWait},
		{Name: "replay", Summary: "send failed requests again (by batch, code, tenant, time), or count them", Run: runReplay},
		{Name: "api", Summary: "serve the HTTP API for producers", Run: runAPI},
		{Name: "env", Summary: "list the environment variables cropq reads, with defaults", Run: runEnv},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(wiring.Main(ctx, "cropq", commands(), wiring.OSEnv(), os.Args[1:], os.Stdout, os.Stderr))
}

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }
func (e exitError) ExitCode() int { return e.code }
