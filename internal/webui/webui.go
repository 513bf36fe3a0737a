// Package webui is cropq's own page for the people who feed and watch it:
// the account's quota, the backlog with its ETAs, failures, batches with
// their progress, a batch's grid of results (source beside crop) and a
// request's record and history. It is server-rendered HTML (html/template,
// embedded; no JavaScript), read-only, behind the API's tokens: a tenant's
// token sees its own batches and requests, the default tenant's (the
// operators') sees every tenant's. Stored results are shown through
// short-lived presigned links; buckets stay private.
package webui

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/budget"
	"github.com/cropq/cropq/internal/quota"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Root is where the pages are served.
const Root = "/ui/"

// PageSize is the results of one page of a batch's grid.
const PageSize = 200

// Records reads status records and the batch index (records.Store).
type Records interface {
	Get(ctx context.Context, id string) (status.Record, error)
	Batches(ctx context.Context, tenant string, limit int) ([]records.BatchRef, error)
	BatchPage(ctx context.Context, tenant, batchID string, st status.State, offset, limit int64) (records.Page, error)
	BatchPaidCalls(ctx context.Context, tenant, batchID string) (int64, error)
	FailuresSince(ctx context.Context, since time.Time) (map[string]int64, error)
	// Failures lists the failed requests a filter chooses (the failures
	// index, while their records live).
	Failures(ctx context.Context, f records.FailureFilter, fn func(records.Failure) bool) error
}

// Batches says where a batch stands, with its ETA (producer.Producer).
type Batches interface {
	Batch(ctx context.Context, tenant, batchID string) (producer.BatchInfo, error)
}

// Quota reads the shared quota and the account's calls (quota.Limiter).
type Quota interface {
	State(ctx context.Context) (quota.State, error)
	Usage(ctx context.Context) (quota.Usage, error)
}

// Backlog reads what waits, per lane and tenant (backlog.Backlog).
type Backlog interface {
	Stats(ctx context.Context) ([]backlog.Stat, error)
}

// Links makes short-lived links to stored objects (results.Presigner).
type Links interface {
	GetURL(ctx context.Context, bucket, key, filename string) (string, error)
}

// Config wires a UI. Records, Batches, Links and Tenant are required.
type Config struct {
	Records Records
	Batches Batches
	Links   Links
	// Tenant is the tenant of r's token, ok false without an accepted token
	// (httpapi.API.Tenant). The default tenant's tokens see every tenant.
	Tenant func(r *http.Request) (tenant string, ok bool)
	// Quota, when set, shows the shared quota (nil: the quota is not shared).
	Quota Quota
	// Backlog and Weights show what waits and its ETA at the quota's rate.
	Backlog Backlog
	Weights map[string]int
	// Saved, when set, reads the fleet's paid calls saved by result reuse,
	// by reason (reused, coalesced; dedup.Index.Saved); nil: reuse is off.
	Saved func(ctx context.Context) (map[string]int64, error)
	// Budgets, when set, reads the tenants' budgets of paid calls and
	// what they spent this period (budget.Budgets.Usages).
	Budgets func(ctx context.Context) ([]budget.Usage, error)
	// Replay, when set, lets operators send failed requests again from
	// the failures page (producer.Producer.Replay).
	Replay func(ctx context.Context, f producer.ReplayFilter, dryRun bool, by string) (producer.ReplayResult, error)
	// Storage checks the default results bucket, as the workers' storage
	// gate does (Copier.CheckBucket).
	Storage func(ctx context.Context) error
	// Timeout bounds the reads of one page (default 10s).
	Timeout time.Duration
	Logger  *slog.Logger
	Now     func() time.Time
}

// UI serves the pages under Root.
type UI struct {
	cfg   Config
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns the UI.
func New(cfg Config) (*UI, error) {
	if cfg.Records == nil || cfg.Batches == nil || cfg.Links == nil || cfg.Tenant == nil {
		return nil, errors.New("webui: Records, Batches, Links and Tenant are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	u := &UI{cfg: cfg, pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	for _, name := range []string{"overview", "batch", "crop", "failures", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("webui: template %s: %w", name, err)
		}
		u.pages[name] = t
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	u.mux.Handle("GET "+Root+"static/", http.StripPrefix(Root+"static/", http.FileServerFS(static)))
	u.mux.HandleFunc("GET "+Root+"{$}", u.overview)
	u.mux.HandleFunc("GET "+Root+"batches/{batchId}", u.batch)
	u.mux.HandleFunc("GET "+Root+"crops", u.search)
	u.mux.HandleFunc("GET "+Root+"crops/{requestId}", u.crop)
	u.mux.HandleFunc("GET "+Root+"failures", u.failures)
	u.mux.HandleFunc("POST "+Root+"failures/replay", u.replay)
	return u, nil
}

// ServeHTTP asks for credentials (Basic, as a browser sends them, or
// Bearer) before anything but the stylesheet.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Frame-Options", "DENY")
	// No script at all; images from the sources' hosts and the presigned
	// links; inline style attributes only for the aspect ratios and bars.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src http: https:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	if !strings.HasPrefix(r.URL.Path, Root+"static/") {
		tenant, ok := u.cfg.Tenant(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="cropq", charset="UTF-8"`)
			http.Error(w, "an API token is needed (as the password of Basic credentials, or a Bearer token)", http.StatusUnauthorized)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), viewerKey{}, viewer{tenant: cmp.Or(tenant, tasks.DefaultTenant)}))
		w.Header().Set("Cache-Control", "no-store") // pages carry live links and per-token data
	}
	u.mux.ServeHTTP(w, r)
}

type viewerKey struct{}

// viewer is who asks: a tenant, or the operators (the default tenant's
// tokens), who see every tenant.
type viewer struct{ tenant string }

func (v viewer) operator() bool { return v.tenant == tasks.DefaultTenant }

// sees reports whether v may see tenant's requests and batches.
func (v viewer) sees(tenant string) bool {
	return v.operator() || v.tenant == cmp.Or(tenant, tasks.DefaultTenant)
}

func viewerOf(r *http.Request) viewer {
	v, _ := r.Context().Value(viewerKey{}).(viewer)
	return v
}

// page is what every page's layout needs.
type page struct {
	Title    string
	Viewer   string
	Operator bool
	Now      time.Time
	Search   string
}

func (u *UI) base(r *http.Request, title string) page {
	v := viewerOf(r)
	return page{Title: title, Viewer: v.tenant, Operator: v.operator(), Now: u.cfg.Now().UTC()}
}

func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var buf strings.Builder
	if err := u.pages[name].Execute(&buf, data); err != nil {
		u.cfg.Logger.ErrorContext(r.Context(), "webui: render", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}

type errorPage struct {
	page
	Status  int
	Message string
}

func (u *UI) fail(w http.ResponseWriter, r *http.Request, code int, msg string, err error) {
	if err != nil {
		u.cfg.Logger.WarnContext(r.Context(), "webui: "+msg, "path", r.URL.Path, "err", err)
	}
	u.render(w, r, code, "error", errorPage{page: u.base(r, http.StatusText(code)), Status: code, Message: msg})
}

// ---- overview ----

type quotaView struct {
	Shared             bool
	Ceiling, Effective float64
	Adaptive           bool
	Usage              quota.Usage
	LimitedPct         float64
	LastDecrease       time.Time
	Err                string
	// Saved are the paid calls saved by result reuse, by reason; nil when
	// reuse is off.
	Reuse      bool
	Saved      map[string]int64
	SavedTotal int64
	SavedErr   string
}

type backlogRow struct {
	Lane, Tenant string
	Len          int64
	Oldest       time.Time
	ETA          time.Duration // -1 unknown
}

type batchRow struct {
	Tenant, BatchID string
	CreatedAt       time.Time
	Info            producer.BatchInfo
	Bar             progress
	Paid            int64
	Link            string
}

type failureRow struct {
	Code string
	N    int64
}

type budgetRow struct {
	budget.Usage
	Pct float64
}

type overviewPage struct {
	page
	Quota      quotaView
	Budgets    []budgetRow
	BudgetErr  string
	Backlog    []backlogRow
	BacklogErr string
	Failures   []failureRow
	FailErr    string
	Storage    string // "" unknown, "ok", or the error
	StorageOK  bool
	Batches    []batchRow
	BatchesErr string
}

func (u *UI) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), u.cfg.Timeout)
	defer cancel()
	v := viewerOf(r)
	p := overviewPage{page: u.base(r, "Overview")}
	rate := -1.0
	if q := u.cfg.Quota; q != nil {
		p.Quota.Shared = true
		st, err := q.State(ctx)
		us, uerr := q.Usage(ctx)
		if err = errors.Join(err, uerr); err != nil {
			p.Quota.Err = err.Error()
		} else {
			rate = st.Effective
			p.Quota.Ceiling, p.Quota.Effective, p.Quota.Adaptive, p.Quota.LastDecrease = st.Ceiling, st.Effective, st.Adaptive, st.LastDecrease
			p.Quota.Usage, p.Quota.LimitedPct = us, 100*us.LimitedShare()
		}
	}
	if u.cfg.Saved != nil {
		saved, err := u.cfg.Saved(ctx)
		if err != nil {
			p.Quota.SavedErr = err.Error()
		}
		p.Quota.Reuse, p.Quota.Saved = true, saved
		for _, n := range saved {
			p.Quota.SavedTotal += n
		}
	}
	if u.cfg.Budgets != nil {
		us, err := u.cfg.Budgets(ctx)
		if err != nil {
			p.BudgetErr = err.Error()
		}
		for _, b := range us {
			if v.sees(b.Tenant) {
				p.Budgets = append(p.Budgets, budgetRow{Usage: b, Pct: math.Round(1000*b.Ratio()) / 10})
			}
		}
	}
	if u.cfg.Backlog != nil {
		stats, err := u.cfg.Backlog.Stats(ctx)
		if err != nil {
			p.BacklogErr = err.Error()
		}
		for _, s := range stats {
			if !v.sees(s.Tenant) {
				continue
			}
			eta := time.Duration(-1)
			if rate > 0 {
				eta = backlog.Estimate(stats, u.cfg.Weights, rate, s.Lane, s.Tenant, s.Len)
			}
			p.Backlog = append(p.Backlog, backlogRow{Lane: s.Lane, Tenant: s.Tenant, Len: s.Len, Oldest: s.Oldest, ETA: eta})
		}
	}
	if v.operator() {
		fails, err := u.cfg.Records.FailuresSince(ctx, u.cfg.Now().Add(-time.Hour))
		if err != nil {
			p.FailErr = err.Error()
		}
		for code, n := range fails {
			p.Failures = append(p.Failures, failureRow{Code: code, N: n})
		}
		slices.SortFunc(p.Failures, func(a, b failureRow) int { return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Code, b.Code)) })
		if u.cfg.Storage != nil {
			if err := u.cfg.Storage(ctx); err != nil {
				p.Storage = err.Error()
			} else {
				p.Storage, p.StorageOK = "reachable", true
			}
		}
	}
	scope := v.tenant
	if v.operator() {
		scope = ""
	}
	refs, err := u.cfg.Records.Batches(ctx, scope, 50)
	if err != nil {
		p.BatchesErr = err.Error()
	}
	for _, ref := range refs {
		bi, err := u.cfg.Batches.Batch(ctx, tenantArg(ref.Tenant), ref.BatchID)
		if errors.Is(err, status.ErrNotFound) {
			continue
		}
		if err != nil {
			p.BatchesErr = err.Error()
			continue
		}
		paid, _ := u.cfg.Records.BatchPaidCalls(ctx, tenantArg(ref.Tenant), ref.BatchID)
		p.Batches = append(p.Batches, batchRow{Tenant: ref.Tenant, BatchID: ref.BatchID, CreatedAt: ref.CreatedAt, Info: bi,
			Bar: progressOf(bi), Paid: paid, Link: batchLink(ref.Tenant, ref.BatchID, "", 1)})
	}
	u.render(w, r, http.StatusOK, "overview", p)
}

// tenantArg is the tenant as the status store takes it ("" is the default).
func tenantArg(t string) string {
	if t == tasks.DefaultTenant {
		return ""
	}
	return t
}

// progress is a batch's bar: shares in per cent, and the counts.
type progress struct {
	Succeeded, Failed, Canceled, Remaining             int64
	SucceededPct, FailedPct, CanceledPct, RemainingPct float64
	Total                                              int64
}

func progressOf(bi producer.BatchInfo) progress {
	p := progress{Succeeded: bi.Counts[status.Succeeded], Failed: bi.Counts[status.Failed], Canceled: bi.Counts[status.Canceled],
		Remaining: bi.Remaining, Total: bi.Total}
	if p.Total > 0 {
		pct := func(n int64) float64 { return math.Round(1000*float64(n)/float64(p.Total)) / 10 }
		p.SucceededPct, p.FailedPct, p.CanceledPct, p.RemainingPct = pct(p.Succeeded), pct(p.Failed), pct(p.Canceled), pct(p.Remaining)
	}
	return p
}

func batchLink(tenant, batchID string, st status.State, pg int) string {
	q := url.Values{}
	if tenant != "" && tenant != tasks.DefaultTenant {
		q.Set("tenant", tenant)
	}
	if st != "" {
		q.Set("state", string(st))
	}
	if pg > 1 {
		q.Set("page", strconv.Itoa(pg))
	}
	l := Root + "batches/" + url.PathEscape(batchID)
	if len(q) > 0 {
		l += "?" + q.Encode()
	}
	return l
}

// ---- batch ----

type card struct {
	Rec       status.Record
	Link      string
	CropURL   string
	SourceURL string
	W, H      int
}

type filter struct {
	State   status.State
	Label   string
	N       int64
	Link    string
	Current bool
}

type batchPage struct {
	page
	Tenant, BatchID string
	Info            producer.BatchInfo
	Bar             progress
	Paid            int64
	State           status.State
	Filters         []filter
	Cards           []card
	PageNo, Pages   int
	First, Last     int64
	Total           int64
	Prev, Next      string
}

func (u *UI) batch(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), u.cfg.Timeout)
	defer cancel()
	v := viewerOf(r)
	id := r.PathValue("batchId")
	if err := tasks.ValidateBatchID(id); err != nil {
		u.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	q := r.URL.Query()
	tenant := v.tenant
	if t := q.Get("tenant"); t != "" {
		if err := tasks.ValidateTenant(t); err != nil {
			u.fail(w, r, http.StatusBadRequest, err.Error(), nil)
			return
		}
		tenant = t
	}
	if !v.sees(tenant) {
		// Batch ids are each tenant's own: another tenant's is not there.
		u.fail(w, r, http.StatusNotFound, "no batch "+id, nil)
		return
	}
	st := status.State(q.Get("state"))
	if st != "" && !slices.Contains(records.GridOrder, st) {
		u.fail(w, r, http.StatusBadRequest, fmt.Sprintf("invalid state %q: one of %v", st, records.GridOrder), nil)
		return
	}
	pg := 1
	if s := q.Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			u.fail(w, r, http.StatusBadRequest, fmt.Sprintf("invalid page %q: a whole number from 1", s), nil)
			return
		}
		pg = n
	}
	bi, err := u.cfg.Batches.Batch(ctx, tenantArg(tenant), id)
	switch {
	case errors.Is(err, status.ErrNotFound):
		u.fail(w, r, http.StatusNotFound, "no batch "+id, nil)
		return
	case err != nil:
		u.fail(w, r, http.StatusServiceUnavailable, "the batch could not be read", err)
		return
	}
	res, err := u.cfg.Records.BatchPage(ctx, tenantArg(tenant), id, st, int64(pg-1)*PageSize, PageSize)
	if err != nil {
		u.fail(w, r, http.StatusServiceUnavailable, "the batch's requests could not be read", err)
		return
	}
	paid, _ := u.cfg.Records.BatchPaidCalls(ctx, tenantArg(tenant), id)
	p := batchPage{page: u.base(r, "Batch "+id), Tenant: tenant, BatchID: id, Info: bi, Bar: progressOf(bi), Paid: paid, State: st,
		PageNo: pg, Total: res.Total}
	p.Filters = append(p.Filters, filter{Label: "all", N: bi.Total, Link: batchLink(tenant, id, "", 1), Current: st == ""})
	for _, s := range records.GridOrder {
		if n := bi.Counts[s]; n > 0 || s == st {
			p.Filters = append(p.Filters, filter{State: s, Label: string(s), N: n, Link: batchLink(tenant, id, s, 1), Current: s == st})
		}
	}
	p.Pages = max(1, int((res.Total+PageSize-1)/PageSize))
	if len(res.Records) > 0 {
		p.First = int64(pg-1)*PageSize + 1
		p.Last = p.First + int64(len(res.Records)) - 1
	}
	if pg > 1 {
		p.Prev = batchLink(tenant, id, st, min(pg-1, p.Pages))
	}
	if pg < p.Pages {
		p.Next = batchLink(tenant, id, st, pg+1)
	}
	p.Cards = make([]card, 0, len(res.Records))
	for _, rec := range res.Records {
		c := card{Rec: rec, Link: Root + "crops/" + url.PathEscape(rec.RequestID), W: rec.TargetWidth, H: rec.TargetHeight}
		if c.W <= 0 || c.H <= 0 {
			c.W, c.H = 1, 1
		}
		if rec.Source == "url" {
			c.SourceURL = rec.SourceURL
		}
		if s := rec.Stored; s != nil {
			if l, err := u.cfg.Links.GetURL(ctx, s.Bucket, s.Key, ""); err == nil {
				c.CropURL = l
			}
		}
		p.Cards = append(p.Cards, c)
	}
	u.render(w, r, http.StatusOK, "batch", p)
}

// ---- request ----

type cropPage struct {
	page
	Rec          status.Record
	CropURL      string
	DownloadURL  string
	APIRequestID string
	BatchLink    string
	History      []status.Transition
	// Others are the request's parameters the page has no row of its own
	// for (shownByName): a field added to tasks.Params is shown without an
	// edit of the page.
	Others []param
}

// param is a request parameter's JSON name and value.
type param struct{ Name, Value string }

// shownByName are the parameters the request page shows on rows of their
// own, worded for each.
var shownByName = []string{"targetWidth", "targetHeight", "bucket", "keyTemplate", "metadata", "batchId", "callbackUrl", "priority", "tenant"}

// otherParams are p's parameters that are set and not in shown.
func otherParams(p tasks.Params, shown []string) []param {
	var out []param
	v := reflect.ValueOf(p)
	for _, f := range reflect.VisibleFields(v.Type()) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if fv := v.FieldByIndex(f.Index); !slices.Contains(shown, name) && !fv.IsZero() {
			out = append(out, param{Name: name, Value: fmt.Sprint(fv.Interface())})
		}
	}
	return out
}

// search answers the search form: the request's page.
func (u *UI) search(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSpace(r.URL.Query().Get("id"))
	if id == "" {
		http.Redirect(w, r, Root, http.StatusSeeOther)
		return
	}
	if err := tasks.ValidateRequestID(id); err != nil {
		u.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	http.Redirect(w, r, Root+"crops/"+url.PathEscape(id), http.StatusSeeOther)
}

func (u *UI) crop(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), u.cfg.Timeout)
	defer cancel()
	id := r.PathValue("requestId")
	if err := tasks.ValidateRequestID(id); err != nil {
		u.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	rec, err := u.cfg.Records.Get(ctx, id)
	switch {
	case errors.Is(err, status.ErrNotFound) || (err == nil && !viewerOf(r).sees(rec.Tenant)):
		u.fail(w, r, http.StatusNotFound, "no request "+id, nil)
		return
	case err != nil:
		u.fail(w, r, http.StatusServiceUnavailable, "the request could not be read", err)
		return
	}
	p := cropPage{page: u.base(r, "Request "+id), Rec: rec, Others: otherParams(rec.Params, shownByName)}
	p.Search = id
	if s := rec.Stored; s != nil {
		p.CropURL, _ = u.cfg.Links.GetURL(ctx, s.Bucket, s.Key, "")
		p.DownloadURL, _ = u.cfg.Links.GetURL(ctx, s.Bucket, s.Key, path.Base(s.Key))
		p.APIRequestID = s.APIRequestID
	}
	if p.APIRequestID == "" && rec.Checkpoint != nil {
		p.APIRequestID = rec.Checkpoint.APIRequestID
	}
	if rec.BatchID != "" {
		p.BatchLink = batchLink(cmp.Or(rec.Tenant, tasks.DefaultTenant), rec.BatchID, "", 1)
	}
	p.History = slices.Clone(rec.History)
	slices.Reverse(p.History) // newest first
	u.render(w, r, http.StatusOK, "crop", p)
}

// ---- template functions ----

var funcs = template.FuncMap{
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return roundDuration(now.Sub(t)) + " ago"
	},
	"eta": func(d time.Duration) string {
		switch {
		case d < 0:
			return "unknown"
		case d == 0:
			return "done"
		}
		return "in " + roundDuration(d)
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"bytes": humanBytes,
	"pct":   func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"rate":  func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) },
	"terminal": func(s status.State) bool {
		return s.Terminal()
	},
}

func roundDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	default:
		return fmt.Sprintf("%.1f days", d.Hours()/24)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
