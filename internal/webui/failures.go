package webui

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// The failures page groups the failed requests a filter chooses by code,
// tenant, batch and hour, with what they cost and a sample of each's error
// and attempts; an operator sends them again from it (a replay). Filters
// combine: each group links to the page with its own value added.

// maxScanned bounds the failures one page reads (the failures index is
// read a page at a time; past this the page says it counted only these).
const maxScanned = 200_000

// samples is how many of the most recent matching failures are shown.
const samples = 20

// csrfCookie is the double-submit token of the replay form: a cross-site
// page can make the browser send Basic credentials, but cannot read the
// cookie (SameSite=Strict, HttpOnly) nor the form's copy of it.
const csrfCookie = "cropq_csrf"

type failureGroup struct {
	Key, Label string
	N, Paid    int64
	Link       string
}

type failureSample struct {
	records.Failure
	Rec     status.Record
	Missing bool
}

type failuresPage struct {
	page
	Filter     producer.ReplayFilter
	FilterText string
	Total      int64
	Paid       int64
	Truncated  bool
	ByCode     []failureGroup
	ByTenant   []failureGroup
	ByBatch    []failureGroup
	ByHour     []failureGroup
	Samples    []failureSample
	Err        string
	CanReplay  bool
	CSRF       string
	Since      string // as the form's datetime-local fields show them
	Until      string
	Result     *producer.ReplayResult
	ResultDry  bool
	Clear      string
}

const formTime = "2006-01-02T15:04"

// failureFilter reads the page's filter from q: batch, code, tenant,
// since, until (UTC, as datetime-local fields send them, or RFC 3339). A
// tenant sees its own failures only, whatever it asks.
func failureFilter(q url.Values, v viewer) (producer.ReplayFilter, error) {
	f := producer.ReplayFilter{BatchID: q.Get("batch"), Code: q.Get("code"), Tenant: q.Get("tenant")}
	if f.BatchID != "" {
		if err := tasks.ValidateBatchID(f.BatchID); err != nil {
			return f, err
		}
	}
	if f.Tenant != "" {
		if err := tasks.ValidateTenant(f.Tenant); err != nil {
			return f, err
		}
	}
	if len(f.Code) > 64 {
		return f, fmt.Errorf("code: at most 64 characters")
	}
	for _, x := range []struct {
		name string
		to   *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		s := q.Get(x.name)
		if s == "" {
			continue
		}
		t, err := time.Parse(formTime, s)
		if err != nil {
			if t, err = time.Parse(time.RFC3339, s); err != nil {
				return f, fmt.Errorf("%s: %q is not a time (2026-12-06T09:00, UTC)", x.name, s)
			}
		}
		*x.to = t.UTC()
	}
	if !v.operator() {
		f.Tenant = v.tenant
	}
	return f, nil
}

// failuresLink is the page with filter f.
func failuresLink(f producer.ReplayFilter) string {
	q := url.Values{}
	for k, v := range map[string]string{"batch": f.BatchID, "code": f.Code, "tenant": f.Tenant} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(formTime))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(formTime))
	}
	if len(q) == 0 {
		return Root + "failures"
	}
	return Root + "failures?" + q.Encode()
}

func (u *UI) failures(w http.ResponseWriter, r *http.Request) {
	v := viewerOf(r)
	f, err := failureFilter(r.URL.Query(), v)
	if err != nil {
		u.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	u.renderFailures(w, r, f, nil, false)
}

func (u *UI) renderFailures(w http.ResponseWriter, r *http.Request, f producer.ReplayFilter, result *producer.ReplayResult, dry bool) {
	ctx, cancel := context.WithTimeout(r.Context(), u.cfg.Timeout)
	defer cancel()
	v := viewerOf(r)
	p := failuresPage{page: u.base(r, "Failures"), Filter: f, Result: result, ResultDry: dry, Clear: Root + "failures"}
	if !f.Since.IsZero() {
		p.Since = f.Since.Format(formTime)
	}
	if !f.Until.IsZero() {
		p.Until = f.Until.Format(formTime)
	}
	var parts []string
	for _, x := range [][2]string{{"tenant", f.Tenant}, {"batch", f.BatchID}, {"code", f.Code}, {"since", p.Since}, {"until", p.Until}} {
		if x[1] != "" && (x[0] != "tenant" || v.operator()) {
			parts = append(parts, x[0]+" "+x[1])
		}
	}
	p.FilterText = cmp.Or(strings.Join(parts, ", "), "all")
	groups := map[string]map[string]*failureGroup{"code": {}, "tenant": {}, "batch": {}, "hour": {}}
	add := func(dim, key, label string, link producer.ReplayFilter, x records.Failure) {
		g := groups[dim][key]
		if g == nil {
			g = &failureGroup{Key: key, Label: label, Link: failuresLink(link)}
			groups[dim][key] = g
		}
		g.N++
		g.Paid += int64(x.Paid)
	}
	var recent []records.Failure
	err := u.cfg.Records.Failures(ctx, records.FailureFilter{Tenant: f.Tenant, BatchID: f.BatchID, Code: f.Code, Since: f.Since, Until: f.Until},
		func(x records.Failure) bool {
			if p.Total >= maxScanned {
				p.Truncated = true
				return false
			}
			p.Total++
			p.Paid += int64(x.Paid)
			byCode, byTenant, byBatch, byHour := f, f, f, f
			byCode.Code, byTenant.Tenant = x.Code, x.Tenant
			byBatch.Tenant, byBatch.BatchID = x.Tenant, x.BatchID
			hour := x.At.Truncate(time.Hour)
			byHour.Since, byHour.Until = hour, hour.Add(time.Hour)
			add("code", x.Code, x.Code, byCode, x)
			add("tenant", x.Tenant, x.Tenant, byTenant, x)
			if x.BatchID != "" {
				label := x.BatchID
				if v.operator() {
					label = x.Tenant + " / " + x.BatchID
				}
				add("batch", x.Tenant+"/"+x.BatchID, label, byBatch, x)
			}
			add("hour", hour.Format(time.RFC3339), hour.Format("2006-01-02 15:00 UTC"), byHour, x)
			recent = append(recent, x)
			if len(recent) > 2*samples {
				recent = append(recent[:0], recent[len(recent)-samples:]...)
			}
			return true
		})
	if err != nil {
		p.Err = err.Error()
	}
	sorted := func(m map[string]*failureGroup, byKey bool) []failureGroup {
		out := make([]failureGroup, 0, len(m))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out = append(out, *m[k])
		}
		if !byKey {
			slices.SortStableFunc(out, func(a, b failureGroup) int { return cmp.Compare(b.N, a.N) })
		}
		return out
	}
	p.ByCode, p.ByBatch, p.ByHour = sorted(groups["code"], false), sorted(groups["batch"], false), sorted(groups["hour"], true)
	if v.operator() {
		p.ByTenant = sorted(groups["tenant"], false)
	}
	if len(recent) > samples {
		recent = recent[len(recent)-samples:]
	}
	slices.Reverse(recent) // newest first
	for _, x := range recent {
		rec, err := u.cfg.Records.Get(ctx, x.RequestID)
		p.Samples = append(p.Samples, failureSample{Failure: x, Rec: rec, Missing: err != nil})
	}
	if v.operator() && u.cfg.Replay != nil {
		p.CanReplay = true
		p.CSRF = csrfToken(w, r)
	}
	u.render(w, r, http.StatusOK, "failures", p)
}

// csrfToken is the form's copy of the request's CSRF cookie, set anew
// when it has none.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 32 {
		return c.Value
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: Root, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return tok
}

// replay answers the page's replay form: operators only, with the CSRF
// token of the page it came from; the filter is the page's.
func (u *UI) replay(w http.ResponseWriter, r *http.Request) {
	v := viewerOf(r)
	if !v.operator() || u.cfg.Replay == nil {
		u.fail(w, r, http.StatusForbidden, "only operators replay from the page (tenants: POST /v1/replays or cropq replay)", nil)
		return
	}
	if err := r.ParseForm(); err != nil {
		u.fail(w, r, http.StatusBadRequest, "the form could not be read", err)
		return
	}
	c, err := r.Cookie(csrfCookie)
	if err != nil || len(c.Value) != 32 || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		u.fail(w, r, http.StatusForbidden, "the form's CSRF token does not match: reload the failures page and try again", nil)
		return
	}
	f, err := failureFilter(r.PostForm, v)
	if err != nil {
		u.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return
	}
	dry := r.PostForm.Get("action") != "replay"
	ctx, cancel := context.WithTimeout(r.Context(), 5*u.cfg.Timeout)
	defer cancel()
	res, err := u.cfg.Replay(ctx, f, dry, "web ui, tenant "+v.tenant)
	if err != nil {
		u.fail(w, r, http.StatusServiceUnavailable, "the replay did not finish", err)
		return
	}
	u.renderFailures(w, r, f, &res, dry)
}
