package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/cropq/cropq/cmd/internal/wiring"
)

// runEnv lists the variables of wiring.EnvVars (--names, --markdown: the
// README's table), with their defaults and current values; --names adds
// the standard OTEL_* variables of tracing (wiring.OTelVars).
func runEnv(_ context.Context, env wiring.Env, args []string, stdout, _ io.Writer) error {
	if len(args) > 0 && args[0] == "--names" {
		for _, v := range wiring.EnvVars() {
			fmt.Fprintln(stdout, v.Name)
			if v.Secret {
				fmt.Fprintln(stdout, v.Name+"_FILE")
			}
		}
		// OpenTelemetry's own, which turn tracing on (docs/tracing.md).
		for _, name := range wiring.OTelVars() {
			fmt.Fprintln(stdout, name)
		}
		return nil
	}
	if len(args) > 0 && args[0] == "--markdown" {
		fmt.Fprint(stdout, wiring.EnvMarkdown())
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tCURRENT\tMEANING")
	for _, v := range wiring.EnvVars() {
		cur := "-"
		if env.IsSet(v.Name) {
			cur = env.Get(v.Name)
			if v.Secret {
				cur = "(set)"
			}
		}
		def := v.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, def, cur, v.Help)
	}
	return tw.Flush()
}
