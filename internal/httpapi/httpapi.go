// Package httpapi is cropq's HTTP interface for ingestion pipelines that are
// not written in Go: submit crops one at a time or in batches, read a
// request's status or a batch's counts, cancel a request that has not
// started. Errors are RFC 9457 problem details naming the field and the
// limit; the OpenAPI document is served at /openapi.json.
//
// Each token belongs to a tenant ("tenant:token"; a bare token is tenant
// "default"): a request's tenant is its token's, a body naming another is
// refused (403), and a request id or batch of another tenant is answered as
// unknown.
package httpapi

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/strictjson"
	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Producer is what the API needs of producer.Producer.
type Producer interface {
	EnqueueBatch(ctx context.Context, reqs []tasks.Request) []producer.Result
	Get(ctx context.Context, requestID string) (status.Record, error)
	// Batch is where a tenant's batch stands (batch ids are each tenant's
	// own): counts, priority and estimate; status.ErrNotFound when unknown.
	Batch(ctx context.Context, tenant, batchID string) (producer.BatchInfo, error)
	Cancel(ctx context.Context, requestID string) (status.Record, error)
	// Report writes a tenant's batch's report to w, one JSON line per
	// request (producer.Producer.Report); status.ErrNotFound, before
	// anything is written, when the tenant has no such batch.
	Report(ctx context.Context, tenant, batchID string, w io.Writer) (producer.ReportStats, error)
	// Replay sends failed requests again (or counts them, dry).
	Replay(ctx context.Context, f producer.ReplayFilter, dryRun bool, by string) (producer.ReplayResult, error)
	// RegisterManifest registers a tenant's manifest batch.
	RegisterManifest(ctx context.Context, tenant string, req producer.ManifestRequest) (producer.BatchInfo, error)
}

// Config configures the API. Zero values take defaults.
type Config struct {
	// Tokens are the accepted bearer tokens, each "tenant:token" or a bare
	// token (tenant "default", the operators'); at least one is required.
	// See ParseTokens for the rules.
	Tokens []string
	// MaxBatch bounds the items of one batch request (default 1,000).
	MaxBatch int
	// MaxBodyBytes bounds the body of one crop (default DefaultMaxBodyBytes:
	// the largest base64 image the API takes, and room for the rest).
	MaxBodyBytes int64
	// MaxBatchBodyBytes bounds the body of a batch (default 64 MiB).
	MaxBatchBodyBytes int64
	// MaxInflightBytes bounds the request bodies being read and enqueued at
	// once (default 128 MiB): a request waits for its share (its
	// Content-Length, or its limit when it has none) and is answered 503
	// when none comes within InflightWait. Memory per body in flight is about
	// three times its size (read buffer, decoded strings, decoded image), so
	// this bounds what a crowd of maximal requests can take.
	MaxInflightBytes int64
	// InflightWait is how long a request waits for its share (default 5s).
	InflightWait time.Duration
	// RequestTimeout bounds the work of one request (default 60s), but for
	// a report's stream.
	RequestTimeout time.Duration
	// ReportTimeout bounds the stream of one batch report (default 30
	// minutes: a million lines to a slow client); each write must still
	// progress within a minute.
	ReportTimeout time.Duration
	Logger        *slog.Logger
	// TracerProvider makes a SERVER span of each request, a child of the
	// caller's traceparent header when it sends one (nil: no spans).
	TracerProvider trace.TracerProvider
}

//go:embed openapi.json
var openAPIDoc []byte

// route is one documented operation; the table drives both the mux and the
// test that the OpenAPI document and the code agree.
type route struct {
	method, path string // path in OpenAPI form: /v1/crops/{requestId}
	auth         bool
	stream       bool // a long answer: ReportTimeout, not RequestTimeout
	handle       func(*API, http.ResponseWriter, *http.Request)
}

func routes() []route {
	return []route{
		{"POST", "/v1/crops", true, false, (*API).createOne},
		{"POST", "/v1/crops/batch", true, false, (*API).createBatch},
		{"GET", "/v1/crops/{requestId}", true, false, (*API).getCrop},
		{"DELETE", "/v1/crops/{requestId}", true, false, (*API).cancelCrop},
		{"POST", "/v1/batches", true, false, (*API).createManifestBatch},
		{"GET", "/v1/batches/{batchId}", true, false, (*API).getBatch},
		{"GET", "/v1/batches/{batchId}/report", true, true, (*API).getReport},
		{"GET", "/openapi.json", false, false, (*API).openAPI},
		{"GET", "/healthz", false, false, (*API).healthz},
		{"POST", "/v1/replays", true, false, (*API).replay},
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
	tokens []tenantToken // compared in constant time, whatever their length
	mux    *http.ServeMux
	// inflight holds the bytes of the bodies being handled (MaxInflightBytes).
	inflight *semaphore.Weighted
	tracer   trace.Tracer
}

// tenantToken is an accepted token, by digest, and its tenant.
type tenantToken struct {
	digest [32]byte
	tenant string
}

// MinTokenLength is the shortest token Config.Tokens accepts, in
// characters: a token is all that stands between the network and a
// tenant's data (a default tenant's token: every tenant's).
const MinTokenLength = 16

// Token is one entry of Config.Tokens, read.
type Token struct {
	Tenant string
	Token  string
}

// ParseTokens reads the entries of Config.Tokens. The rule that tells a
// bare token from a tenant's: an entry with a ':' is "tenant:token", and
// what comes before its first ':' must be a valid tenant name
// (tasks.ValidateTenant); an entry without ':' is a bare token, of tenant
// "default" (whose tokens are the operators'). So a bare token never holds
// a ':', and a mistyped tenant ("ACME:…", "ac~me:…") is refused instead of
// making its token an operator's. Every token has MinTokenLength
// characters or more, and belongs to one tenant; an entry given twice
// counts once. Errors are *TokensError naming the entry's position (from
// 1), never quoting it: it holds a secret.
func ParseTokens(entries []string) ([]Token, error) {
	if len(entries) == 0 {
		return nil, &TokensError{Reason: "at least one bearer token is required"}
	}
	var out []Token
	owner := map[string]string{} // token → tenant
	for i, entry := range entries {
		bad := func(format string, a ...any) error {
			return &TokensError{Entry: i + 1, Reason: fmt.Sprintf(format, a...)}
		}
		tenant, tok, hasTenant := strings.Cut(entry, ":")
		if !hasTenant {
			tenant, tok = tasks.DefaultTenant, entry
		} else if tasks.ValidateTenant(tenant) != nil {
			// Not quoted: what comes before the ':' may be part of a token.
			return nil, bad("what comes before the first ':' is not a tenant name (1–%d characters of a-z 0-9 . _ -); an entry is tenant:token, or a bare token (tenant %s) without ':'",
				tasks.MaxTenantLen, tasks.DefaultTenant)
		}
		switch n := utf8.RuneCountInString(tok); {
		case n == 0:
			return nil, bad("token is empty")
		case n < MinTokenLength:
			return nil, bad("token must be at least %d characters, got %d", MinTokenLength, n)
		}
		if have, ok := owner[tok]; ok {
			if have != tenant {
				return nil, bad("gives tenant %s a token of tenant %s: a token belongs to one tenant", tenant, have)
			}
			continue
		}
		owner[tok] = tenant
		out = append(out, Token{Tenant: tenant, Token: tok})
	}
	return out, nil
}

// DefaultMaxBodyBytes is the default body limit of one crop: the largest
// base64 image the API takes (cropapi.DefaultLimits) and 2 MiB for the rest.
const DefaultMaxBodyBytes = 34 << 20

// More defaults of Config.
const (
	DefaultMaxBatch          = 1000
	DefaultMaxBatchBodyBytes = 64 << 20
	DefaultMaxInflightBytes  = 128 << 20
)

// TokensError is the error of ParseTokens (and New) for Config.Tokens that
// cannot be used.
type TokensError struct {
	Entry  int // the entry at fault, from 1; 0 when none is
	Reason string
}

func (e *TokensError) Error() string {
	if e.Entry == 0 {
		return "httpapi: Config.Tokens: " + e.Reason
	}
	return fmt.Sprintf("httpapi: Config.Tokens: entry %d: %s", e.Entry, e.Reason)
}

// New returns the API on p.
func New(p Producer, cfg Config) (*API, error) {
	tokens, err := ParseTokens(cfg.Tokens)
	if err != nil {
		return nil, err
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxBatchBodyBytes <= 0 {
		cfg.MaxBatchBodyBytes = DefaultMaxBatchBodyBytes
	}
	if cfg.MaxInflightBytes <= 0 {
		cfg.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if cfg.InflightWait <= 0 {
		cfg.InflightWait = 5 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = time.Minute
	}
	if cfg.ReportTimeout <= 0 {
		cfg.ReportTimeout = 30 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{p: p, cfg: cfg, log: log, mux: http.NewServeMux(), inflight: semaphore.NewWeighted(cfg.MaxInflightBytes),
		tracer: tracing.TracerIfOn(cfg.TracerProvider)}
	for _, t := range tokens {
		a.tokens = append(a.tokens, tenantToken{digest: sha256.Sum256([]byte(t.Token)), tenant: t.Tenant})
	}
	for _, r := range routes() {
		h := r.handle
		timeout := a.cfg.RequestTimeout
		if r.stream {
			timeout = a.cfg.ReportTimeout
		}
		name := r.method + " " + r.path
		a.mux.HandleFunc(name, func(w http.ResponseWriter, req *http.Request) {
			ctx, span := a.serverSpan(req, name, r.path)
			defer span.End()
			if span.IsRecording() {
				sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
				defer func() { endServerSpan(span, sw.code) }()
				w = sw
			}
			if r.auth {
				tenant, ok := a.Tenant(req)
				if !ok {
					w.Header().Set("WWW-Authenticate", `Bearer realm="cropq"`)
					problem(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required", "")
					return
				}
				ctx = context.WithValue(ctx, tenantKey{}, tenant)
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
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

// Tenants counts the accepted tokens of each tenant (what start-up logs:
// never the tokens).
func (a *API) Tenants() map[string]int {
	out := map[string]int{}
	for _, t := range a.tokens {
		out[t.tenant]++
	}
	return out
}

// Authorized reports whether r carries an accepted token: as a Bearer
// token, or as the password of Basic credentials (what a browser can send,
// for the web UI).
func (a *API) Authorized(r *http.Request) bool {
	_, ok := a.Tenant(r)
	return ok
}

// Tenant returns the tenant of r's token (see Authorized), ok false when r
// carries no accepted token. Every token is compared, in constant time.
func (a *API) Tenant(r *http.Request) (tenant string, ok bool) {
	// The scheme is case-insensitive (RFC 9110 §11.1).
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	ok = ok && strings.EqualFold(scheme, "Bearer")
	if !ok {
		if _, pw, basic := r.BasicAuth(); basic {
			tok, ok = pw, true
		}
	}
	if !ok {
		return "", false
	}
	got := sha256.Sum256([]byte(tok))
	match, at := 0, 0
	for i, want := range a.tokens {
		eq := subtle.ConstantTimeCompare(got[:], want.digest[:])
		match |= eq
		at = subtle.ConstantTimeSelect(eq, i, at)
	}
	if match != 1 {
		return "", false
	}
	return a.tokens[at].tenant, true
}

// tenantKey is the context key of the request's tenant (its token's).
type tenantKey struct{}

// tenantOf is the tenant of r's token (set for every authorized route).
func tenantOf(r *http.Request) string {
	t, _ := r.Context().Value(tenantKey{}).(string)
	return t
}

// claimTenant gives req the caller's tenant; a request naming another
// valid tenant is refused (one naming an invalid tenant is left to
// validation, which names the field). The default tenant is left implicit,
// so a single-tenant deployment's requests are what they were before
// tenants.
func claimTenant(req *tasks.Request, tenant string) (foreign bool) {
	switch {
	case req.Tenant == "":
		if tenant != tasks.DefaultTenant {
			req.Tenant = tenant
		}
	case req.Tenant != tenant && tasks.ValidateTenant(req.Tenant) == nil:
		return true
	}
	return false
}

// forbiddenTenant answers a body that names another tenant than its token's.
func forbiddenTenant(w http.ResponseWriter, where, named, tenant string) {
	problem(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%stenant %q is not the tenant of this token (%s): a token submits for its own tenant only; nothing was enqueued",
		where, named, tenant), "tenant")
}

// visible reports whether rec belongs to tenant (a record without a tenant
// is the default tenant's).
func visible(rec status.Record, tenant string) bool {
	have := rec.Tenant
	if have == "" {
		have = tasks.DefaultTenant
	}
	return have == tenant
}

// CropRequest is the JSON body of one crop: the request model every
// entrance shares.
type CropRequest = tasks.Request

// ItemResult is the answer for one crop.
type ItemResult struct {
	RequestID string         `json:"requestId"`
	Outcome   string         `json:"outcome"` // enqueued, known, conflict, invalid, error
	Status    *status.Record `json:"status,omitempty"`
	Error     *Problem       `json:"error,omitempty"`
}

func (a *API) createOne(w http.ResponseWriter, r *http.Request) {
	release, ok := a.admit(w, r, a.cfg.MaxBodyBytes)
	if !ok {
		return
	}
	defer release()
	var req tasks.Request
	if err := strictjson.Decode(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes), &req); err != nil {
		writeProblem(w, decodeProblem(err))
		return
	}
	tenant := tenantOf(r)
	if claimTenant(&req, tenant) {
		forbiddenTenant(w, "", req.Tenant, tenant)
		return
	}
	res := a.p.EnqueueBatch(r.Context(), []tasks.Request{req})[0]
	a.logErrors(r.Context(), res)
	item := itemResult(res, tenant)
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
	BatchID string          `json:"batchId,omitempty"`
	Items   []tasks.Request `json:"items"`
}

// BatchResponse answers a batch, item by item, in order.
type BatchResponse struct {
	BatchID string         `json:"batchId,omitempty"`
	Counts  map[string]int `json:"counts"`
	Results []ItemResult   `json:"results"`
}

// createBatch reads the batch item by item from the body, so the body is
// never held twice. The rule for items: an item that cannot be read as a
// crop request (a wrong type, an unknown or repeated field) is refused
// alone, as "invalid" with its field, exactly like an item whose values are
// out of range; the others are enqueued. What is wrong with the batch
// itself (malformed JSON, a bad batchId, no items, too many) refuses it
// whole.
func (a *API) createBatch(w http.ResponseWriter, r *http.Request) {
	release, ok := a.admit(w, r, a.cfg.MaxBatchBodyBytes)
	if !ok {
		return
	}
	defer release()
	var (
		batchID  string
		reqs     []tasks.Request
		itemErrs = map[int]error{}
		sawItems bool
		nItems   int
	)
	dec := strictjson.NewDecoder(http.MaxBytesReader(w, r.Body, a.cfg.MaxBatchBodyBytes))
	err := dec.Object(func(name string) error {
		switch name {
		case "batchId":
			return dec.Value(&batchID)
		case "items":
			sawItems = true
			return dec.Array(func(i int) error {
				nItems = i + 1
				if i >= a.cfg.MaxBatch {
					return dec.Skip() // counted, to say how many came
				}
				var it tasks.Request
				err := dec.Value(&it)
				var je *strictjson.Error
				if errors.As(err, &je) && je.Kind != strictjson.Syntax {
					// Anything wrong inside the item (a wrong type, an
					// unknown or repeated field, a string that is not
					// UTF-8) is this item's alone: it was read whole.
					itemErrs[i] = err
					err = nil
				}
				reqs = append(reqs, it)
				return err
			})
		default:
			return dec.UnknownField("batchId", "items")
		}
	})
	if err == nil {
		err = dec.End()
	}
	switch {
	case err != nil:
		writeProblem(w, decodeProblem(err))
		return
	case nItems > a.cfg.MaxBatch:
		problem(w, http.StatusRequestEntityTooLarge, "batch-too-large", fmt.Sprintf("items must hold at most %d crops, got %d", a.cfg.MaxBatch, nItems), "items")
		return
	case !sawItems || len(reqs) == 0:
		problem(w, http.StatusBadRequest, "invalid-request", "items must hold at least one crop", "items")
		return
	}
	if batchID != "" {
		if err := tasks.ValidateBatchID(batchID); err != nil {
			writeProblem(w, problemOf(err))
			return
		}
	}
	// Every item is the token's tenant's: one naming another refuses the
	// whole batch, before anything is enqueued.
	tenant := tenantOf(r)
	for i := range reqs {
		if claimTenant(&reqs[i], tenant) {
			forbiddenTenant(w, fmt.Sprintf("items[%d]: ", i), reqs[i].Tenant, tenant)
			return
		}
	}
	var valid []tasks.Request
	var at []int
	for i, it := range reqs {
		if it.BatchID == "" {
			reqs[i].BatchID = batchID
		}
		if itemErrs[i] == nil {
			valid = append(valid, reqs[i])
			at = append(at, i)
		}
	}
	results := make([]producer.Result, len(reqs))
	for i, err := range itemErrs {
		results[i] = producer.Result{RequestID: reqs[i].RequestID, Outcome: producer.Invalid, Err: itemError(err, i)}
	}
	if len(valid) > 0 {
		for k, res := range a.p.EnqueueBatch(r.Context(), valid) {
			results[at[k]] = res
		}
	}
	a.logErrors(r.Context(), results...)
	out := BatchResponse{BatchID: batchID, Counts: map[string]int{}, Results: make([]ItemResult, len(results))}
	for i, r := range results {
		out.Results[i] = itemResult(r, tenant)
		out.Counts[string(r.Outcome)]++
	}
	writeJSON(w, http.StatusAccepted, out)
}

// itemError is a decoding error of item i, its field named within the item.
func itemError(err error, i int) error {
	var je *strictjson.Error
	if !errors.As(err, &je) {
		return err
	}
	item := fmt.Sprintf("items[%d]", i)
	field := strings.TrimPrefix(strings.TrimPrefix(je.Field, item), ".")
	if field == "" {
		field = item // the item itself: not an object
	}
	return &cropapi.ValidationError{Field: field, Reason: je.Reason}
}

// admit reserves the body's share of MaxInflightBytes and checks the
// content type; ok false means the answer was written.
func (a *API) admit(w http.ResponseWriter, r *http.Request, limit int64) (release func(), ok bool) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if cs, ok := params["charset"]; err != nil || mt != "application/json" || (ok && !strings.EqualFold(cs, "utf-8")) {
		// JSON is UTF-8 (RFC 8259 §8.1): a body declared otherwise would be
		// read as something it is not.
		problem(w, http.StatusUnsupportedMediaType, "unsupported-media-type", "the body must be sent with Content-Type: application/json (charset, if given, utf-8)", "")
		return nil, false
	}
	if r.ContentLength > limit {
		problem(w, http.StatusRequestEntityTooLarge, "body-too-large", fmt.Sprintf("the body must be at most %d bytes", limit), "")
		return nil, false
	}
	n := limit
	if r.ContentLength >= 0 {
		n = max(r.ContentLength, 1)
	}
	// A body larger than the whole budget runs alone rather than never.
	n = min(n, a.cfg.MaxInflightBytes)
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.InflightWait)
	defer cancel()
	if err := a.inflight.Acquire(ctx, n); err != nil {
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, "busy", "too many large requests are being handled; retry", "")
		return nil, false
	}
	return func() { a.inflight.Release(n) }, true
}

// logErrors logs what the client only sees as "unavailable".
func (a *API) logErrors(ctx context.Context, res ...producer.Result) {
	for _, r := range res {
		if r.Outcome == producer.Error {
			a.log.ErrorContext(ctx, "httpapi: enqueue", "request_id", r.RequestID, "err", r.Err)
		}
	}
}

// itemResult is the answer for res, submitted by tenant: the record of
// another tenant's request id (a conflict) is not shown.
func itemResult(res producer.Result, tenant string) ItemResult {
	item := ItemResult{RequestID: res.RequestID, Outcome: string(res.Outcome)}
	if res.Record.RequestID != "" && (res.Outcome == producer.Enqueued || visible(res.Record, tenant)) {
		rec := res.Record
		item.Status = &rec
	}
	if res.Err != nil {
		p := problemOf(res.Err)
		if res.Outcome == producer.Conflict && res.Record.RequestID != "" && !visible(res.Record, tenant) {
			// Request ids are global: another tenant's id is taken, and that
			// is all this tenant learns (no field of the other's request).
			p.Detail, p.Field = fmt.Sprintf("request id %s is already used: choose another (prefixing ids with your tenant avoids clashes)", res.RequestID), "requestId"
		}
		p.Type = typeURI(p.Type)
		item.Error = &p
	}
	return item
}

func (a *API) getCrop(w http.ResponseWriter, r *http.Request) {
	rec, ok := a.crop(w, r)
	if ok {
		writeJSON(w, http.StatusOK, rec)
	}
}

func (a *API) cancelCrop(w http.ResponseWriter, r *http.Request) {
	rec, ok := a.crop(w, r)
	if !ok {
		return
	}
	rec, err := a.p.Cancel(r.Context(), rec.RequestID)
	if err != nil {
		writeProblem(w, a.storeProblem(r, err))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// crop reads the record of the path's request id, or answers the problem
// and reports false. Another tenant's request is answered as unknown (and
// so left alone).
func (a *API) crop(w http.ResponseWriter, r *http.Request) (status.Record, bool) {
	id := r.PathValue("requestId")
	if err := tasks.ValidateRequestID(id); err != nil {
		writeProblem(w, problemOf(err))
		return status.Record{}, false
	}
	rec, err := a.p.Get(r.Context(), id)
	if err == nil && !visible(rec, tenantOf(r)) {
		err = status.ErrNotFound
	}
	if err != nil {
		writeProblem(w, a.storeProblem(r, err))
		return status.Record{}, false
	}
	return rec, true
}

// BatchStatus is where a batch stands.
type BatchStatus struct {
	BatchID string           `json:"batchId"`
	Tenant  string           `json:"tenant"`
	Total   int64            `json:"total"`
	Done    bool             `json:"done"` // every request is in a terminal state
	Counts  map[string]int64 `json:"counts"`
	// Remaining requests are not yet in a terminal state.
	Remaining int64 `json:"remaining"`
	// Priority is the lowest lane among the batch's requests.
	Priority string `json:"priority"`
	// ETASeconds estimates how long until the remaining requests are done,
	// from the backlog ahead of them in their lane, the tenant's share and
	// the fleet's effective rate (absent when it cannot be estimated); ETA
	// is the same as a time.
	ETASeconds *float64   `json:"etaSeconds,omitempty"`
	ETA        *time.Time `json:"eta,omitempty"`
	// Saved counts the requests that reused a stored result of the same
	// crop instead of paying: paid calls saved.
	Saved int64 `json:"saved,omitempty"`
	// Reason is why the batch does not move when it is not its turn:
	// "budget" while its tenant's budget of paid calls is spent, until
	// ResumesAt (the next period; absent with a budget of 0).
	Reason    string     `json:"reason,omitempty"`
	ResumesAt *time.Time `json:"resumesAt,omitempty"`
	// Unchanged counts the requests whose destination already held their
	// crop (a re-sync): succeeded without a copy or a write, counted in
	// saved too.
	Unchanged int64 `json:"unchanged,omitempty"`
	// Manifest is how far a manifest batch's manifest was read.
	Manifest *ManifestStatus `json:"manifest,omitempty"`
}

// ManifestStatus is how far a batch's manifest was read.
type ManifestStatus struct {
	URL  string `json:"url"`
	ETag string `json:"etag"`
	Size int64  `json:"size"`
	// State is reading, done or stopped (then Code and Message say why).
	State   string `json:"state"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// Lines are the request lines read; TotalLines their number once the
	// manifest was read to its end.
	Lines      int64 `json:"lines"`
	TotalLines int64 `json:"totalLines,omitempty"`
	BytesRead  int64 `json:"bytesRead"`
}

// createManifestBatch registers a batch fed from a manifest in S3.
func (a *API) createManifestBatch(w http.ResponseWriter, r *http.Request) {
	release, ok := a.admit(w, r, 64<<10)
	if !ok {
		return
	}
	defer release()
	var req producer.ManifestRequest
	if err := strictjson.Decode(http.MaxBytesReader(w, r.Body, 64<<10), &req); err != nil {
		writeProblem(w, decodeProblem(err))
		return
	}
	if req.Manifest == "" {
		problem(w, http.StatusBadRequest, "invalid-request", "manifest: is required (s3://BUCKET/KEY)", "manifest")
		return
	}
	tenant := tenantOf(r)
	bi, err := a.p.RegisterManifest(r.Context(), tenant, req)
	var exists *producer.BatchExistsError
	switch {
	case errors.As(err, &exists):
		problem(w, http.StatusConflict, "conflict", fmt.Sprintf("batch %s exists already with other requests or another manifest: choose another batchId", exists.BatchID), "batchId")
		return
	case err != nil:
		writeProblem(w, problemOf(err))
		if !errors.As(err, new(*cropapi.ValidationError)) {
			a.log.ErrorContext(r.Context(), "httpapi: register manifest", "err", err)
		}
		return
	}
	if req.BatchID == "" {
		req.BatchID = producer.BatchIDOf(req.Manifest)
	}
	writeJSON(w, http.StatusAccepted, batchStatus(req.BatchID, tenant, bi))
}

// getBatch answers the token's tenant's batch of that id: another tenant's
// is not seen (batch ids are each tenant's own).
func (a *API) getBatch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("batchId")
	if err := tasks.ValidateBatchID(id); err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	tenant := tenantOf(r)
	bi, err := a.p.Batch(r.Context(), tenant, id)
	switch {
	case errors.Is(err, status.ErrNotFound):
		problem(w, http.StatusNotFound, "not-found", "no batch "+id, "")
		return
	case err != nil:
		writeProblem(w, a.storeProblem(r, err))
		return
	}
	writeJSON(w, http.StatusOK, batchStatus(id, tenant, bi))
}

func batchStatus(id, tenant string, bi producer.BatchInfo) BatchStatus {
	out := BatchStatus{BatchID: id, Tenant: cmp.Or(tenant, tasks.DefaultTenant), Total: bi.Total, Done: bi.Done,
		Counts: map[string]int64{}, Remaining: bi.Remaining, Priority: bi.Priority, Saved: bi.Saved, Unchanged: bi.Unchanged}
	for st, n := range bi.Counts {
		out.Counts[string(st)] = n
	}
	if out.Reason = bi.Waiting; !bi.ResumesAt.IsZero() {
		at := bi.ResumesAt.UTC()
		out.ResumesAt = &at
	}
	if bi.ETA >= 0 {
		secs := math.Round(bi.ETA.Seconds()*10) / 10
		at := time.Now().UTC().Add(bi.ETA).Truncate(time.Second)
		out.ETASeconds, out.ETA = &secs, &at
	}
	if m := bi.Manifest; m != nil {
		out.Manifest = &ManifestStatus{URL: m.URL, ETag: m.ETag, Size: m.Size, State: m.State, Code: m.Code, Message: m.Message,
			Lines: m.Lines, TotalLines: m.Total, BytesRead: m.Offset}
	}
	return out
}

// Trailers of a report: how many lines it held, and whether the batch was
// done when it began (the report is then exact).
const (
	ReportLinesTrailer = "Cropq-Report-Lines"
	ReportDoneTrailer  = "Cropq-Report-Done"
)

// getReport streams the token's tenant's batch's report as NDJSON, one
// JSON line per request of the batch, read from Redis a page at a time
// and never held whole. See producer.Producer.Report for what a report of
// a running batch holds. A failure once lines were sent aborts the
// response (the client sees it cut, never a short report that looks
// whole); the trailers say how many lines were sent.
func (a *API) getReport(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("batchId")
	if err := tasks.ValidateBatchID(id); err != nil {
		writeProblem(w, problemOf(err))
		return
	}
	lw := &lazyNDJSON{w: w, rc: http.NewResponseController(w)}
	stats, err := a.p.Report(r.Context(), tenantOf(r), id, lw)
	switch {
	case err != nil && lw.started:
		if !errors.Is(r.Context().Err(), context.Canceled) { // not the client going away
			a.log.ErrorContext(r.Context(), "httpapi: report cut short", "batch_id", id, "lines", stats.Lines, "err", err)
		}
		panic(http.ErrAbortHandler)
	case errors.Is(err, status.ErrNotFound):
		problem(w, http.StatusNotFound, "not-found", "no batch "+id, "")
		return
	case err != nil:
		writeProblem(w, a.storeProblem(r, err))
		return
	}
	lw.start() // an empty report is an empty body
	w.Header().Set(ReportLinesTrailer, fmt.Sprint(stats.Lines))
	w.Header().Set(ReportDoneTrailer, fmt.Sprint(stats.Done))
}

// lazyNDJSON sends a report's headers with its first bytes, so that a
// batch found unknown before any is still a 404; it keeps pushing the
// write deadline while the stream progresses.
type lazyNDJSON struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	started  bool
	deadline time.Time
}

func (l *lazyNDJSON) start() {
	if l.started {
		return
	}
	l.started = true
	h := l.w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Trailer", ReportLinesTrailer+", "+ReportDoneTrailer)
	l.w.WriteHeader(http.StatusOK)
}

func (l *lazyNDJSON) Write(p []byte) (int, error) {
	l.start()
	if now := time.Now(); now.After(l.deadline.Add(-50 * time.Second)) {
		// A slow client gets a minute per write, not the server's
		// WriteTimeout for the whole report (not every writer has one).
		l.deadline = now.Add(time.Minute)
		_ = l.rc.SetWriteDeadline(l.deadline)
	}
	return l.w.Write(p)
}

func (a *API) openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDoc)
}

func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// decodeProblem maps an error of reading a body.
func decodeProblem(err error) Problem {
	var tooBig *http.MaxBytesError
	var je *strictjson.Error
	switch {
	case errors.As(err, &tooBig):
		return Problem{Type: "body-too-large", Title: "body too large", Status: http.StatusRequestEntityTooLarge,
			Detail: fmt.Sprintf("the body must be at most %d bytes", tooBig.Limit)}
	case errors.As(err, &je):
		return Problem{Type: "invalid-request", Title: "invalid request", Status: http.StatusBadRequest, Detail: je.Error(), Field: je.Field}
	case errors.As(err, new(*cropapi.ValidationError)):
		return problemOf(err)
	}
	return Problem{Type: "invalid-request", Title: "invalid request", Status: http.StatusBadRequest, Detail: "the body could not be read"}
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
		return Problem{Type: "conflict", Title: "request id already used", Status: http.StatusConflict,
			Detail: fmt.Sprintf("request id %s is already used with a different %s", ce.RequestID, ce.Field), Field: ce.Field}
	}
	return Problem{Type: "unavailable", Title: "service unavailable", Status: http.StatusServiceUnavailable, Detail: "could not enqueue; nothing was recorded; retry"}
}

func problem(w http.ResponseWriter, code int, typ, detail, field string) {
	writeProblem(w, Problem{Type: typ, Title: strings.ReplaceAll(typ, "-", " "), Status: code, Detail: detail, Field: field})
}

func writeProblem(w http.ResponseWriter, p Problem) {
	p.Type = typeURI(p.Type)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// typeURI is a problem type's URI, the same form for every problem.
func typeURI(slug string) string {
	return problemBase + strings.TrimPrefix(slug, problemBase)
}

const problemBase = "https://cropq.dev/problems/"

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
