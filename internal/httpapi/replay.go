package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/cropq/cropq/internal/strictjson"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/tasks"
)

// ReplayRequest is the body of POST /v1/replays.
type ReplayRequest struct {
	// Filter chooses the failed requests; required (an empty object
	// chooses every failure the token may see).
	Filter *ReplayFilter `json:"filter"`
	// DryRun answers how many requests match, and changes nothing.
	DryRun bool `json:"dryRun,omitempty"`
}

// ReplayFilter chooses failed requests; absent fields choose all. A
// tenant's token chooses among its own failures only.
type ReplayFilter struct {
	// Pointers: "" is refused, not taken for absent (which would choose
	// every failure).
	BatchID *string    `json:"batchId,omitempty"`
	Code    *string    `json:"code,omitempty"`
	Tenant  *string    `json:"tenant,omitempty"`
	Since   *time.Time `json:"since,omitempty"`
	Until   *time.Time `json:"until,omitempty"` // exclusive
}

// ReplayResponse answers a replay: what matched and what was done.
type ReplayResponse struct {
	DryRun bool `json:"dryRun"`
	producer.ReplayResult
}

// codePattern is an error code as records keep them (the API's resCodes,
// the worker's codes, "http_404"…).
var codePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// replay sends failed requests again (issue: failures come in waves; once
// the cause is fixed they are sent again, each in its own lane).
func (a *API) replay(w http.ResponseWriter, r *http.Request) {
	const limit = 64 << 10
	release, ok := a.admit(w, r, limit)
	if !ok {
		return
	}
	defer release()
	var req ReplayRequest
	if err := strictjson.Decode(http.MaxBytesReader(w, r.Body, limit), &req); err != nil {
		writeProblem(w, decodeProblem(err))
		return
	}
	if req.Filter == nil {
		problem(w, http.StatusBadRequest, "invalid-request", "filter is required: an object with any of batchId, code, tenant, since, until ({} chooses every failure)", "filter")
		return
	}
	f := req.Filter
	for name, v := range map[string]*string{"filter.batchId": f.BatchID, "filter.code": f.Code, "filter.tenant": f.Tenant} {
		if v != nil && *v == "" {
			problem(w, http.StatusBadRequest, "invalid-request", name+": must not be empty (leave the field out instead)", name)
			return
		}
	}
	pf := producer.ReplayFilter{BatchID: deref(f.BatchID), Code: deref(f.Code), Tenant: deref(f.Tenant)}
	switch {
	case pf.BatchID != "" && tasks.ValidateBatchID(pf.BatchID) != nil:
		writeProblem(w, filterProblem(tasks.ValidateBatchID(pf.BatchID)))
		return
	case pf.Tenant != "" && tasks.ValidateTenant(pf.Tenant) != nil:
		writeProblem(w, filterProblem(tasks.ValidateTenant(pf.Tenant)))
		return
	case pf.Code != "" && !codePattern.MatchString(pf.Code):
		problem(w, http.StatusBadRequest, "invalid-request", "filter.code: an error code of 1–64 characters of A-Z a-z 0-9 _ . - (e.g. 900, http_404, key_taken)", "filter.code")
		return
	case f.Since != nil && f.Until != nil && !f.Until.After(*f.Since):
		problem(w, http.StatusBadRequest, "invalid-request", "filter.until must be after filter.since", "filter.until")
		return
	}
	if f.Since != nil {
		pf.Since = *f.Since
	}
	if f.Until != nil {
		pf.Until = *f.Until
	}
	tenant := tenantOf(r)
	if tenant != tasks.DefaultTenant {
		// A tenant replays its own failures only; the operators' tokens
		// (the default tenant's) any tenant's.
		if pf.Tenant != "" && pf.Tenant != tenant {
			problem(w, http.StatusForbidden, "forbidden", fmt.Sprintf("filter.tenant %q is not the tenant of this token (%s): a token replays its own tenant's failures only; nothing was replayed", pf.Tenant, tenant), "filter.tenant")
			return
		}
		pf.Tenant = tenant
	}
	res, err := a.p.Replay(r.Context(), pf, req.DryRun, a.caller(r))
	if err != nil {
		writeProblem(w, a.storeProblem(r, err))
		return
	}
	code := http.StatusAccepted
	if req.DryRun {
		code = http.StatusOK
	}
	writeJSON(w, code, ReplayResponse{DryRun: req.DryRun, ReplayResult: res})
}

// caller names who sent r for an audit: its tenant and its token's
// fingerprint (never the token).
func (a *API) caller(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		_, tok, _ = r.BasicAuth()
	}
	sum := sha256.Sum256([]byte(tok))
	return "tenant " + tenantOf(r) + ", token sha256:" + hex.EncodeToString(sum[:4])
}

// filterProblem is the problem of a filter's field: its name under
// "filter.".
func filterProblem(err error) Problem {
	p := problemOf(err)
	if p.Field != "" {
		p.Field = "filter." + p.Field
		p.Detail = "filter." + p.Detail
	}
	return p
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
