// Command cropq-dev holds the local stand-ins of cropq, kept out of the
// production binary (cmd/cropq):
//
//	cropq-dev dev        run the whole system locally and crop the sample images (make run)
//	cropq-dev emulator   run the local stand-in of the Image Cropping API
//
// It never calls the paid API.
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
		{Name: "dev", Summary: "run the whole system locally and crop the sample images", Run: runDev},
		{Name: "emulator", Summary: "run the local stand-in of the Image Cropping API", Run: runEmulator},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(wiring.Main(ctx, "cropq-dev", commands(), wiring.OSEnv(), os.Args[1:], os.Stdout, os.Stderr))
}
