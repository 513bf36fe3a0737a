// Package monitor mounts the asynq web UI (asynqmon) for operators:
// read-only unless configured otherwise, behind the API's credentials, with
// payloads shown without image bodies or callback secrets.
package monitor

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"

	"github.com/cropq/cropq/tasks"

	"github.com/cropq/cropq/internal/delivery"
	"github.com/cropq/cropq/internal/redact"
)

// Config configures the UI.
type Config struct {
	RedisConnOpt asynq.RedisConnOpt
	// RootPath is where the UI is mounted (default "/monitoring").
	RootPath string
	// ReadOnly hides and refuses retry, delete, archive and pause actions.
	ReadOnly bool
	// PrometheusURL, when set, feeds the UI's metrics charts.
	PrometheusURL string
	// Authorize decides who may see the UI; nil leaves it open (local dev).
	Authorize func(*http.Request) bool
}

// Handler serves the UI. Close releases its Redis connection.
type Handler struct {
	ui        *asynqmon.HTTPHandler
	authorize func(*http.Request) bool
}

// New returns the UI handler.
func New(cfg Config) *Handler {
	if cfg.RootPath == "" {
		cfg.RootPath = "/monitoring"
	}
	ui := asynqmon.New(asynqmon.Options{
		RootPath:          cfg.RootPath,
		RedisConnOpt:      cfg.RedisConnOpt,
		ReadOnly:          cfg.ReadOnly,
		PrometheusAddress: cfg.PrometheusURL,
		PayloadFormatter:  asynqmon.PayloadFormatterFunc(FormatPayload),
		ResultFormatter:   asynqmon.ResultFormatterFunc(func(_ string, b []byte) string { return fmt.Sprintf("%d bytes", len(b)) }),
	})
	return &Handler{ui: ui, authorize: cfg.Authorize}
}

// RootPath is where the UI is mounted.
func (h *Handler) RootPath() string { return h.ui.RootPath() }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.authorize != nil && !h.authorize(r) {
		// Basic lets a browser ask for the token (as the password).
		w.Header().Set("WWW-Authenticate", `Basic realm="cropq", charset="UTF-8"`)
		http.Error(w, "a valid API token is required (as the Basic password, or a Bearer token)", http.StatusUnauthorized)
		return
	}
	h.ui.ServeHTTP(w, r)
}

// Close releases the UI's Redis connection.
func (h *Handler) Close() error { return h.ui.Close() }

// FormatPayload shows a task payload without what must not be on a screen:
// base64 image bodies (megabytes, and customer data) and callback URL query
// strings (they often carry tokens).
func FormatPayload(taskType string, payload []byte) string {
	switch taskType {
	case tasks.TypeCrop:
		p, err := tasks.ParseCropPayload(payload)
		if err != nil {
			return fmt.Sprintf("(undecodable crop payload, %d bytes)", len(payload))
		}
		if p.ImageBase64 != "" {
			p.ImageBase64 = fmt.Sprintf("(%d bytes of base64, not shown)", len(p.ImageBase64))
		}
		p.CallbackURL = redact.URL(p.CallbackURL)
		return marshal(p)
	case delivery.TypeDeliver:
		var p delivery.Payload
		if err := json.Unmarshal(payload, &p); err != nil {
			return fmt.Sprintf("(undecodable webhook payload, %d bytes)", len(payload))
		}
		p.URL = redact.URL(p.URL)
		return marshal(p)
	}
	return fmt.Sprintf("(%d bytes)", len(payload))
}

func marshal(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "(unprintable)"
	}
	return string(b)
}
