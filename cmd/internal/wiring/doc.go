// Package wiring holds what both commands, cropq (production) and cropq-dev
// (the local stand-ins), build from the environment: the configuration
// (CROPQ_* variables, read only here and in cmd), the Redis connection, the
// worker process, the producer, the web UI, and the subcommand plumbing.
// It lives under cmd because it reads the environment: packages outside cmd
// take their configuration as values.
package wiring
