package wiring

import (
	"errors"
	"flag"
	"io"
)

// ErrUsage is returned after a flag error was already printed.
var ErrUsage = errors.New("usage")

// ParseFlags parses args into fs, printing errors and help to stderr.
func ParseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return ErrUsage
	}
	return nil
}
