package wiring

import (
	"io"
	"log/slog"
)

// NewLogger builds the process logger: JSON in production, text in dev.
func NewLogger(env Env, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(env.Get("CROPQ_LOG_LEVEL")))
	opts := &slog.HandlerOptions{Level: level}
	if env.Get("CROPQ_LOG_FORMAT") == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
