// Package dedup keeps cropq from paying twice for the same crop: a crop key
// names what a result depends on (the source image and the target size),
// an index in Redis maps a key to the stored object of the request that
// paid for it, and a short claim on a key (Claim) lets one of several
// twins in flight at once make the call while the others wait for its
// result.
//
// The worker (worker/reuse.go) decides what to do with them; this package
// only holds the mechanics.
package dedup

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/tasks"
)

// Scope says whose results a request may reuse.
type Scope string

const (
	// ScopeTenant reuses results only within a tenant: a tenant's images
	// and buckets are its own (the default).
	ScopeTenant Scope = "tenant"
	// ScopeGlobal reuses results across tenants.
	ScopeGlobal Scope = "global"
	// ScopeOff never reuses a result.
	ScopeOff Scope = "off"
)

// ParseScope reads CROPQ_DEDUP_SCOPE's values.
func ParseScope(s string) (Scope, error) {
	switch sc := Scope(s); sc {
	case ScopeTenant, ScopeGlobal, ScopeOff:
		return sc, nil
	}
	return "", fmt.Errorf("dedup: scope must be tenant, global or off, got %q", s)
}

// Source is what a crop's result depends on, short of the API itself.
type Source struct {
	// Tenant is the request's tenant; it joins the key in ScopeTenant.
	Tenant string
	// URL is the canonical source URL (CanonicalURL), "" when Digest is set.
	URL string
	// Digest is the SHA-256 (hex) of the image's bytes.
	Digest        string
	Width, Height int
	// Values are the request's other fields that change the result
	// (tasks.Request.CropKeyValues), "" when none is set.
	Values string
}

// keyVersion changes when the key's composition does, so that an index
// written by another version is never misread.
const keyVersion = "k1"

// key is the crop key of s: a digest of everything a result depends on.
// variant names what else changes results (the API endpoint), scope whether
// the tenant is part of it.
func key(s Source, scope Scope, variant string) string {
	h := sha256.New()
	tenant := ""
	if scope == ScopeTenant {
		tenant = s.Tenant
	}
	src := "url\x00" + s.URL
	if s.Digest != "" {
		src = "sha256\x00" + s.Digest
	}
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%dx%d%s", keyVersion, variant, tenant, src, s.Width, s.Height, s.Values)
	// 128 bits: collisions are out of reach, and each index entry is
	// shorter by the other half.
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

// SourceOf is the source identity of a crop payload: the SHA-256 of the
// bytes of a base64 or claim-checked image (the claim check carries it),
// the canonical URL of a URL image. ok is false when the request opted
// out (dedup: false).
func SourceOf(p tasks.CropPayload) (src Source, ok bool, err error) {
	if p.Dedup != nil && !*p.Dedup {
		return Source{}, false, nil
	}
	// The parts the key was first made of are read here by name (the
	// fields tagged cropkey "source", "size" and "tenant"); any other
	// field that changes the result joins it by its tag, as Values.
	src = Source{Tenant: p.EffectiveTenant(), Width: p.TargetWidth, Height: p.TargetHeight, Values: p.CropKeyValues()}
	switch {
	case p.Input != nil:
		if len(p.Input.SHA256) != 64 {
			return Source{}, false, errors.New("dedup: claim check without a SHA-256")
		}
		src.Digest = strings.ToLower(p.Input.SHA256)
	case p.ImageBase64 != "":
		raw, err := base64.StdEncoding.DecodeString(p.ImageBase64)
		if err != nil {
			return Source{}, false, fmt.Errorf("dedup: decode imageBase64: %w", err)
		}
		sum := sha256.Sum256(raw)
		src.Digest = hex.EncodeToString(sum[:])
	default:
		if src.URL, err = CanonicalURL(p.ImageURL); err != nil {
			return Source{}, false, err
		}
	}
	return src, true, nil
}

// CanonicalURL is the form of an image URL two requests for the same image
// most plausibly share: scheme and host lower-cased, the scheme's default
// port and the fragment (never sent) dropped, and everything else — user
// info, path, query — kept byte for byte, since a server may tell those
// apart.
func CanonicalURL(raw string) (string, error) {
	if _, err := url.Parse(raw); err != nil {
		return "", fmt.Errorf("dedup: image URL: %w", err)
	}
	s, _, _ := strings.Cut(raw, "#")
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return "", errors.New("dedup: image URL is not absolute")
	}
	scheme = strings.ToLower(scheme)
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo := ""
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, authority = authority[:i+1], authority[i+1:]
	}
	host, port := authority, ""
	if i := strings.LastIndexByte(authority, ':'); i >= 0 && !strings.Contains(authority[i:], "]") {
		host, port = authority[:i], authority[i+1:]
	}
	host = strings.ToLower(host)
	if port == defaultPort[scheme] {
		port = ""
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + userinfo + host + tail, nil
}

var defaultPort = map[string]string{"http": "80", "https": "443"}

// Keyer computes crop keys for a fleet's settings.
type Keyer struct {
	Scope Scope
	// Variant is anything else that changes a result (the API's base URL).
	Variant string
	// Mode is how a URL image's identity is known (CROPQ_DEDUP_SOURCE);
	// "" is SourceBytes with a Fetcher, SourceURL without.
	Mode SourceMode
	// Fetch reaches URL images' origins: to download and key them by their
	// bytes (SourceBytes), or to record and revalidate their validators
	// (SourceValidators).
	Fetch *Fetcher
}

// mode is k's effective source mode.
func (k Keyer) mode() SourceMode {
	switch {
	case k.Mode != "":
		return k.Mode
	case k.Fetch != nil:
		return SourceBytes
	}
	return SourceURL
}

// Revalidates reports whether p's results are revalidated at the origin
// before reuse: a URL image under SourceValidators.
func (k Keyer) Revalidates(p tasks.CropPayload) bool {
	return k.mode() == SourceValidators && k.Fetch != nil && p.Input == nil && p.ImageBase64 == "" && p.ImageURL != ""
}

// HintKey is p's crop key as far as it is known without reaching the
// origin: the URL's key for a URL image (whatever the mode), the bytes'
// for an inline or claim-checked one; "" when results are not reused for
// p. Under SourceBytes, a result paid for is indexed under it too, so
// that the feeder can tell a request likely to need no call (package
// backlog's Classifier) without downloading anything.
func (k Keyer) HintKey(p tasks.CropPayload) (string, error) {
	if k.Scope == ScopeOff || k.Scope == "" {
		return "", nil
	}
	src, ok, err := SourceOf(p)
	if err != nil || !ok {
		return "", err
	}
	return key(src, k.Scope, k.Variant), nil
}

// Foreign reports whether r was paid for by another tenant than tenant (an
// effective tenant: "default" for none), whose request must then not be
// named to tenant's. An entry that does not record its tenant is foreign
// unless the scope is tenant, where keys are each tenant's own.
func (k Keyer) Foreign(r Result, tenant string) bool {
	if r.Tenant == "" {
		return k.Scope != ScopeTenant
	}
	return r.Tenant != tenant
}

// Key is p's crop key, "" when results are not reused for it (scope off,
// or the request opted out). With a Fetcher, a URL image is downloaded and
// keyed by its bytes; a download that fails falls back to the URL's key,
// which still catches the same URL.
func (k Keyer) Key(ctx context.Context, p tasks.CropPayload) (string, error) {
	if k.Scope == ScopeOff || k.Scope == "" {
		return "", nil
	}
	src, ok, err := SourceOf(p)
	if err != nil || !ok {
		return "", err
	}
	if src.URL != "" && k.Fetch != nil && k.mode() == SourceBytes {
		digest, ferr := k.Fetch.Digest(ctx, p.ImageURL)
		if ferr == nil {
			src.URL, src.Digest = "", digest
		} else {
			err = ferr // reported, and the URL's key used
		}
	}
	return key(src, k.Scope, k.Variant), err
}

// HintKey is p's hint key with the index's settings (see Keyer.HintKey).
func (x *Index) HintKey(p tasks.CropPayload) (string, error) { return x.cfg.Keyer.HintKey(p) }

// Revalidate checks, before r is reused for p, that the bytes behind p's
// URL are those r was cropped from (Fetcher.Revalidate); without an origin
// request (Check.Outcome "") where p's mode does not revalidate.
func (x *Index) Revalidate(ctx context.Context, p tasks.CropPayload, r Result) (Check, error) {
	if !x.cfg.Keyer.Revalidates(p) {
		return Check{Unchanged: true}, nil
	}
	return x.cfg.Fetch.Revalidate(ctx, p.ImageURL, r.Source)
}

// SourceValidators are the validators of p's image to record with the
// result about to be paid for (Fetcher.Validators); zero where p's mode
// does not revalidate.
func (x *Index) SourceValidators(ctx context.Context, p tasks.CropPayload) (Validators, error) {
	if !x.cfg.Keyer.Revalidates(p) {
		return Validators{}, nil
	}
	return x.cfg.Fetch.Validators(ctx, p.ImageURL)
}

// Known reports, for each key, whether the index holds an entry under it
// (one pipelined round trip; "" is never known).
func (x *Index) Known(ctx context.Context, keys []string) ([]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	pipe := x.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		if k != "" {
			cmds[i] = pipe.Exists(ctx, x.EntryKey(k))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("dedup: known: %w", err)
	}
	out := make([]bool, len(keys))
	for i, c := range cmds {
		out[i] = c != nil && c.Val() > 0
	}
	return out, nil
}

// Key is the crop key of p with the index's settings (see Keyer.Key).
func (x *Index) Key(ctx context.Context, p tasks.CropPayload) (string, error) {
	return x.cfg.Keyer.Key(ctx, p)
}
