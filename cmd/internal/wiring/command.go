package wiring

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// Command is one subcommand of a binary.
type Command struct {
	Name, Summary string
	Run           func(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) error
}

// Main runs the subcommand args[0] of prog and returns the process's exit
// code: main without the process, so tests can call it.
func Main(ctx context.Context, prog string, cmds []Command, env Env, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(prog, cmds, stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range cmds {
		if c.Name != args[0] {
			continue
		}
		err := c.Run(ctx, env, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, ErrUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "%s %s: %v\n", prog, c.Name, err)
			var ec exitCoder
			if errors.As(err, &ec) {
				return ec.ExitCode()
			}
			return 1
		}
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n", prog, args[0])
	usage(prog, cmds, stderr)
	return 2
}

func usage(prog string, cmds []Command, w io.Writer) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", prog)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for the flags of a command, 'cropq env' for the environment.\n", prog)
}

// exitCoder is an error that chooses the process's exit code.
type exitCoder interface{ ExitCode() int }
