package dedup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// SourceMode says how a URL image's identity is known (CROPQ_DEDUP_SOURCE).
type SourceMode string

const (
	// SourceValidators keys a URL image by its URL, records the origin's
	// validators (ETag, Last-Modified, Content-Length) when its result is
	// paid for, and revalidates them with a conditional request before
	// reusing it; an origin without validators is checked by its bytes'
	// digest (the default).
	SourceValidators SourceMode = "validators"
	// SourceBytes downloads a URL image and keys it by its bytes' digest
	// (CROPQ_DEDUP_FETCH=true is its alias).
	SourceBytes SourceMode = "bytes"
	// SourceURL trusts the URL's text: safe only for immutable,
	// content-addressed URLs.
	SourceURL SourceMode = "url"
)

// ParseSourceMode reads CROPQ_DEDUP_SOURCE's values ("" is the default).
func ParseSourceMode(s string) (SourceMode, error) {
	switch m := SourceMode(s); m {
	case "":
		return SourceValidators, nil
	case SourceValidators, SourceBytes, SourceURL:
		return m, nil
	}
	return "", fmt.Errorf("dedup: source must be validators, bytes or url, got %q", s)
}

// Validators identify the bytes behind a URL at the time a result was paid
// for: the origin's validators, or, where it gives none, the bytes' digest.
type Validators struct {
	ETag         string // as the origin sent it, quotes and W/ included
	LastModified string // as the origin sent it
	Length       int64  // Content-Length; -1 or 0 when unknown
	// Digest is the SHA-256 (hex) of the bytes, set when the origin gave
	// neither an ETag nor a Last-Modified.
	Digest string
}

// validated reports whether v holds a validator the origin can be asked
// about.
func (v Validators) validated() bool { return v.ETag != "" || v.LastModified != "" }

// Known reports whether v says anything about the bytes: an entry without
// it cannot be revalidated, and is paid for again.
func (v Validators) Known() bool { return v.validated() || v.Digest != "" }

// Outcomes of a revalidation (cropq_dedup_revalidations_total's outcome).
const (
	OutcomeUnchanged   = "unchanged"    // the origin's validators say the bytes are those cropped
	OutcomeChanged     = "changed"      // they are not (or the origin could not tell)
	OutcomeNoValidator = "no_validator" // no validator: the bytes were downloaded and hashed
)

// Check is what a revalidation found.
type Check struct {
	Unchanged bool
	// Outcome is one of the Outcome constants; "" when no origin request
	// was made (not a URL image, or a mode that does not revalidate).
	Outcome string
	// Current are the origin's validators now (zero when unknown).
	Current Validators
}

// validatorsOf reads the validators of a 200 answer.
func validatorsOf(resp *http.Response) Validators {
	v := Validators{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Length: resp.ContentLength}
	if v.Length < 0 {
		v.Length = 0
	}
	return v
}

// sameValidators compares what the origin sends now with what was
// recorded: an ETag decides when both have one (weak or strong: the same
// tag, byte for byte); otherwise Last-Modified and, where both are known,
// Content-Length must both match. ok is false when they have no validator
// in common (the digest decides then).
func sameValidators(old, cur Validators) (same, ok bool) {
	switch {
	case old.ETag != "" && cur.ETag != "":
		return old.ETag == cur.ETag, true
	case old.LastModified != "" && cur.LastModified != "" && old.ETag == "" && cur.ETag == "":
		if old.Length > 0 && cur.Length > 0 && old.Length != cur.Length {
			return false, true
		}
		return old.LastModified == cur.LastModified, true
	case old.validated() && cur.validated():
		// One side has an ETag, the other only a date: the origin changed
		// how it answers; nothing in common to compare.
		return false, true
	}
	return false, false
}

// Validators fetches rawURL's validators, for the result about to be paid
// for. Taken before the paid call, so that an image replaced meanwhile
// reads as changed next time (a crop paid again), never as unchanged (a
// stale crop reused). Without an ETag or Last-Modified, the bytes are
// hashed (bounded by MaxBytes).
func (f *Fetcher) Validators(ctx context.Context, rawURL string) (Validators, error) {
	resp, err := f.get(ctx, rawURL, nil)
	if err != nil {
		return Validators{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Validators{}, fmt.Errorf("dedup: validators: HTTP %d", resp.StatusCode)
	}
	v := validatorsOf(resp)
	if v.validated() {
		return v, nil
	}
	if v.Digest, err = f.hash(resp); err != nil {
		return Validators{}, err
	}
	return v, nil
}

// Revalidate asks the origin whether the bytes behind rawURL are still
// those old describes, with one conditional GET (If-None-Match,
// If-Modified-Since): a 304, or the same validators, is unchanged. Where
// the origin gives no validator, the answer's bytes are hashed and
// compared with old's digest. An entry that knows nothing of its bytes,
// and any failure, read as changed: the crop is paid for again rather
// than reused stale.
func (f *Fetcher) Revalidate(ctx context.Context, rawURL string, old Validators) (Check, error) {
	if !old.Known() {
		return Check{Outcome: OutcomeChanged}, nil
	}
	h := http.Header{}
	if old.ETag != "" {
		h.Set("If-None-Match", old.ETag)
	}
	if old.LastModified != "" {
		h.Set("If-Modified-Since", old.LastModified)
	}
	resp, err := f.get(ctx, rawURL, h)
	if err != nil {
		return Check{Outcome: OutcomeChanged}, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return Check{Unchanged: true, Outcome: OutcomeUnchanged, Current: old}, nil
	case http.StatusOK:
	default:
		return Check{Outcome: OutcomeChanged}, fmt.Errorf("dedup: revalidate: HTTP %d", resp.StatusCode)
	}
	cur := validatorsOf(resp)
	if same, ok := sameValidators(old, cur); ok {
		if !same {
			return Check{Outcome: OutcomeChanged, Current: cur}, nil
		}
		return Check{Unchanged: true, Outcome: OutcomeUnchanged, Current: cur}, nil
	}
	// No validator in common: the bytes decide.
	digest, err := f.hash(resp)
	if err != nil {
		return Check{Outcome: OutcomeNoValidator}, err
	}
	cur.Digest = digest
	return Check{Unchanged: old.Digest != "" && digest == old.Digest, Outcome: OutcomeNoValidator, Current: cur}, nil
}

// get sends a GET with header h, under the fetcher's address rules,
// redirects and timeout.
func (f *Fetcher) get(ctx context.Context, rawURL string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("dedup: fetch: %w", err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("dedup: fetch: %w", stripQuery(err))
	}
	return resp, nil
}

// hash reads a 200 answer's body, bounded by MaxBytes, and returns the
// SHA-256 (hex) of its bytes.
func (f *Fetcher) hash(resp *http.Response) (string, error) {
	if resp.ContentLength > f.cfg.MaxBytes {
		return "", fmt.Errorf("dedup: fetch: image of %d bytes exceeds the %d-byte limit", resp.ContentLength, f.cfg.MaxBytes)
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(resp.Body, f.cfg.MaxBytes+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("dedup: fetch: read: %w", err)
	case n > f.cfg.MaxBytes:
		return "", fmt.Errorf("dedup: fetch: image exceeds the %d-byte limit", f.cfg.MaxBytes)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// encode is the compact form of v in an index entry (sep-separated fields
// that none of its values can hold: sep is a control character).
func (v Validators) encode() []string {
	return []string{v.ETag, v.LastModified, strconv.FormatInt(v.Length, 10), v.Digest}
}

func decodeValidators(f []string) (Validators, error) {
	n, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return Validators{}, fmt.Errorf("dedup: index entry: source length: %w", err)
	}
	return Validators{ETag: f[0], LastModified: f[1], Length: n, Digest: f[3]}, nil
}

// clean drops what an index entry cannot hold (the separator) from a
// header value the origin sent: such a validator is kept out, never
// misread.
func clean(s string) string {
	if strings.Contains(s, sep) {
		return ""
	}
	return s
}
