// Package httpapi is cropq's HTTP interface for ingestion pipelines that are
// not written in Go: submit crops one at a time or in batches, read a
// request's status or a batch's counts, cancel a request that has not
// started. Errors are RFC 9457 problem details naming the field and the
// limit; the OpenAPI document is served at /openapi.json.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Producer is what the API needs of producer.Producer.
type Producer interface {
	EnqueueBatch(ctx context.Context, reqs []tasks.CropPayload) []producer.Result
	Get(ctx context.Context, requestID string) (status.Record, error)
	BatchCounts(ctx context.Context, batchID string) (map[status.State]int64, error)
	Cancel(ctx context.Context, requestID string) (status.Record, error)
}

// Config configures the API. Zero values take defaults.
type Config struct {
	// Tokens are the accepted bearer tokens; at least one is required.
	Tokens []string
	// MaxBatch bounds the items of one batch request (default 1,000).
	MaxBatch int
	// MaxBodyBytes bounds a request body (default 64 MiB: a batch of base64
	// images is large).
	MaxBodyBytes int64
	// RequestTimeout bounds the work of one request (default 60s).
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

//go:embed openapi.json
var openAPIDoc []byte

// route is one documented operation; the table drives both the mux and the
// test that the OpenAPI document and the code agree.
type route struct {
	method, path string // path in OpenAPI form: /v1/crops/{requestId}
	auth         bool
	handle       func(*API, http.ResponseWriter, *http.Request)
}

func routes() []route {
	return []route{
		{"POST", "/v1/crops", true, (*API).createOne},
		{"POST", "/v1/crops/batch", true, (*API).createBatch},
		{"GET", "/v1/crops/{requestId}", true, (*API).getCrop},
		{"DELETE", "/v1/crops/{requestId}", true, (*API).cancelCrop},
		{"GET", "/v1/batches/{batchId}", true, (*API).getBatch},
		{"GET", "/openapi.json", false, (*API).openAPI},
		{"GET", "/healthz", false, (*API).healthz},
	}
}

// Routes lists the operations as "METHOD /path", sorted (the OpenAPI
// document must list exactly these).
func Routes() []string {
	var out []string
	for _, r := range routes() {
		out = append(out, r.method+" "+r.path)
	}
	slices.Sort(out)
	return out
}

// API is an http.Handler.
type API struct {
	p      Producer
	cfg    Config
	log    *slog.Logger
	tokens [][32]byte // digests: compared in constant time, whatever their length
	mux    *http.ServeMux
}

// New returns the API on p.
func New(p Producer, cfg Config) (*API, error) {
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("httpapi: at least one bearer token is required (CROPQ_API_TOKENS)")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{p: p, cfg: cfg, log: log, mux: http.NewServeMux()}
	for _, t := range cfg.Tokens {
		if t == "" {
			return nil, errors.New("httpapi: empty bearer token")
		}
		a.tokens = append(a.tokens, sha256.Sum256([]byte(t)))
	}
	for _, r := range routes() {
		h := r.handle
		a.mux.HandleFunc(r.method+" "+r.path, func(w http.ResponseWriter, req *http.Request) {
			if r.auth && !a.Authorized(req) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="cropq"`)
				problem(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required", "")
				return
			}
			ctx, cancel := context.WithTimeout(req.Context(), a.cfg.RequestTimeout)
			defer cancel()
			h(a, w, req.WithContext(ctx))
		})
	}
	// Anything else: a problem, not the mux's plain-text 404/405.
	a.mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		problem(w, http.StatusNotFound, "not-found", "no such route: "+req.Method+" "+req.URL.Path, "")
	})
	return a, nil
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Authorized reports whether r carries an accepted token: as a Bearer
// token, or as the password of Basic credentials (what a browser can send,
// for the web UI).
func (a *API) Authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		if _, pw, basic := r.BasicAuth(); basic {
			tok, ok = pw, true
		}
	}
	if !ok {
		return false
	}
	got := sha256.Sum256([]byte(tok))
	match := 0
	for _, want := range a.tokens {
		match |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	return match == 1
}

// CropRequest is the JSON body of one crop.
type CropRequest struct {
	RequestID    string            `json:"requestId"`
	ImageURL     string            `json:"imageUrl,omitempty"`
	ImageBase64  string            `json:"imageBase64,omitempty"`
	TargetWidth  int               `json:"targetWidth"`
	TargetHeight int               `json:"targetHeight"`
	Bucket       string            `json:"bucket,omitempty"`
	KeyTemplate  string            `json:"keyTemplate,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	BatchID      string            `json:"batchId,omitempty"`
	CallbackURL  string            `json:"callbackUrl,omitempty"`
}

// Payload is the crop task payload of c.
func (c CropRequest) Payload() tasks.CropPayload {
	return tasks.CropPayload{RequestID: c.RequestID, ImageURL: c.ImageURL, ImageBase64: c.ImageBase64,
		TargetWidth: c.TargetWidth, TargetHeight: c.TargetHeight, Bucket: c.Bucket, KeyTemplate: c.KeyTemplate,
		Metadata: c.Metadata, BatchID: c.BatchID, CallbackURL: c.CallbackURL}
}

// ItemResult is the answer for one crop.
type ItemResult struct {
	RequestID string         `json:"requestId"`
	Outcome   string         `json:"outcome"` // enqueued, known, conflict, invalid, error
	Status    *status.Record `json:"status,omitempty"`
	Error     *Problem       `json:"error,omitempty"`
}

func (a *API) createOne(w http.ResponseWriter, r *http.Request) {
	var req CropRequest
	if !a.decode(w, r, &req) {
		return
	}
	res := a.p.EnqueueBatch(r.Context(), []tasks.CropPayload{req.Payload()})[0]
	a.logErrors(r.Context(), res)
	item := itemResult(res)
	switch res.Outcome {
	case producer.Enqueued:
		writeJSON(w, http.StatusAccepted, item)
	case producer.Known:
		writeJSON(w, http.StatusOK, item)
	default:
		writeProblem(w, *item.Error)
	}
}

// BatchRequest is the JSON body of a batch.
type BatchRequest struct {
	// BatchID is applied to items that have none.
	BatchID string        `json:"batchId,omitempty"`
	Items   []CropRequest `json:"items"`
}

// BatchResponse answers a batch, item by item, in order.
type BatchResponse struct {
	BatchID string         `json:"batchId,omitempty"`
	Counts  map[string]int `json:"counts"`
	Results []ItemResult   `json:"results"`
}

func (a *API) createBatch(w http.ResponseWriter, r *http.Request) {
	var req BatchRequest
	if !a.decode(w, r, &req) {
		return
	}
	switch {
	case len(req.Items) == 0:
		problem(w, http.StatusBadRequest, "invalid-request", "items must hold at least one crop", "items")
		return
	case len(req.Items) > a.cfg.MaxBatch:
		problem(w, http.StatusRequestEntityTooLarge, "batch-too-large",
			fmt.Sprintf("items must hold at most %d crops, got %d", a.cfg.MaxBatch, len(req.Items)), "items")
		return
	}
	payloads := make([]tasks.CropPayload, len(req.Items))
	for i, it := range req.Items {
		if it.BatchID == "" {
			it.BatchID = req.BatchID
		}
		payloads[i] = it.Payload()
	}
	res := a.p.EnqueueBatch(r.Context(), payloads)
	a.logErrors(r.Context(), res...)
	out := BatchResponse{BatchID: req.BatchID, Counts: map[string]int{}, Results: make([]ItemResult, len(res))}
	for i, r := range res {
		out.Results[i] = itemResult(r)
		out.Counts[string(r.Outcome)]++
	}
	writeJSON(w, http.StatusAccepted, out)
}

// logErrors logs what the client only sees as "unavailable".
func (a *API) logErrors(ctx context.Context, res ...producer.Result) {
	for _, r := range res {
		if r.Outcome == producer.Error {
			a.log.ErrorContext(ctx, "httpapi: enqueue", "request_id", r.RequestID, "err", r.Err)
		}
	}
}

func itemResult(res producer.Result) ItemResult {
	item := ItemResult{RequestID: res.RequestID, Outcome: string(res.Outcome)}
	if res.Record.RequestID != "" {
		rec := res.Record
		item.Status = &rec
	}
	if res.Err != nil {
		p := problemOf(res.Err)
		item.Error = &p
	}
	return item
}

func (a *API) getCrop(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("requestId")
	if err := tasks.ValidateRequestID(id); err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	rec, err := a.p.Get(r.Context(), id)
	if err != nil {
		writeProblem(w, a.storeProblem(r, err))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (a *API) cancelCrop(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("requestId")
	if err := tasks.ValidateRequestID(id); err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	rec, err := a.p.Cancel(r.Context(), id)
	if err != nil {
		writeProblem(w, a.storeProblem(r, err))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// BatchStatus is a batch's counts per state.
type BatchStatus struct {
	BatchID string           `json:"batchId"`
	Total   int64            `json:"total"`
	Done    bool             `json:"done"` // every request is in a terminal state
	Counts  map[string]int64 `json:"counts"`
}

func (a *API) getBatch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("batchId")
	if err := tasks.ValidateRequestID(id); err != nil {
		writeProblem(w, Problem{Type: "invalid-request", Title: "invalid request", Status: http.StatusBadRequest, Detail: "batchId: " + validationReason(err), Field: "batchId"})
		return
	}
	counts, err := a.p.BatchCounts(r.Context(), id)
	if err != nil {
		writeProblem(w, a.storeProblem(r, err))
		return
	}
	if len(counts) == 0 {
		problem(w, http.StatusNotFound, "not-found", "no batch "+id, "")
		return
	}
	out := BatchStatus{BatchID: id, Counts: map[string]int64{}, Done: true}
	for st, n := range counts {
		out.Counts[string(st)] = n
		out.Total += n
		if !st.Terminal() {
			out.Done = false
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDoc)
}

func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// decode reads a JSON body strictly, within the body limit.
func (a *API) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		problem(w, http.StatusUnsupportedMediaType, "unsupported-media-type", "the body must be application/json", "")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			problem(w, http.StatusRequestEntityTooLarge, "body-too-large", fmt.Sprintf("the body must be at most %d bytes", tooBig.Limit), "")
		case errors.As(err, &typeErr):
			problem(w, http.StatusBadRequest, "invalid-request", fmt.Sprintf("%s must be a %s", typeErr.Field, typeErr.Type), typeErr.Field)
		default:
			problem(w, http.StatusBadRequest, "invalid-request", "the body is not the expected JSON: "+err.Error(), "")
		}
		return false
	}
	return true
}

// storeProblem maps a status lookup error.
func (a *API) storeProblem(r *http.Request, err error) Problem {
	var te *status.TransitionError
	switch {
	case errors.Is(err, status.ErrNotFound):
		return Problem{Type: "not-found", Title: "not found", Status: http.StatusNotFound, Detail: "no request " + r.PathValue("requestId")}
	case errors.As(err, &te):
		return Problem{Type: "conflict", Title: "conflict", Status: http.StatusConflict,
			Detail: fmt.Sprintf("request %s is %s: only a queued request can be canceled", te.RequestID, te.From)}
	}
	a.log.ErrorContext(r.Context(), "httpapi: store", "err", err)
	return Problem{Type: "unavailable", Title: "service unavailable", Status: http.StatusServiceUnavailable, Detail: "the status store is unavailable; retry"}
}

// Problem is an RFC 9457 problem details object, with the field at fault.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Field  string `json:"field,omitempty"`
}

func problemOf(err error) Problem {
	var ve *cropapi.ValidationError
	var ce *producer.ConflictError
	switch {
	case errors.As(err, &ve):
		return Problem{Type: "invalid-request", Title: "invalid request", Status: http.StatusBadRequest, Detail: ve.Error(), Field: ve.Field}
	case errors.As(err, &ce):
		return Problem{Type: "conflict", Title: "request id already used", Status: http.StatusConflict, Detail: ce.Error(), Field: ce.Field}
	}
	return Problem{Type: "unavailable", Title: "service unavailable", Status: http.StatusServiceUnavailable, Detail: "could not enqueue; nothing was recorded; retry"}
}

func validationReason(err error) string {
	var ve *cropapi.ValidationError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return err.Error()
}

func problem(w http.ResponseWriter, code int, typ, detail, field string) {
	writeProblem(w, Problem{Type: typ, Title: strings.ReplaceAll(typ, "-", " "), Status: code, Detail: detail, Field: field})
}

func writeProblem(w http.ResponseWriter, p Problem) {
	p.Type = "https://cropq.dev/problems/" + strings.TrimPrefix(p.Type, "https://cropq.dev/problems/")
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
