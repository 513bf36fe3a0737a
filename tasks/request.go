package tasks

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/netguard"
	"github.com/cropq/cropq/internal/objectkey"
	"github.com/cropq/cropq/internal/strictjson"
)

// Request is one crop request: the one shape every entrance takes (the HTTP
// API's body and batch items, JSONL and CSV bulk files, the CLI's flags and
// the Go library) and validates with Validate.
//
// Adding a field is one edit here (in Params when the status record is to
// keep it, as it should unless it is an option of the submission): its json
// name is also its CSV column, its flag tag its CLI flag ("-": none), and
// two tags say what it is to dedup and to idempotency, which
// TestEveryFieldHasItsDecisions asks of every field:
//
//   - cropkey: whether it changes the result, and so joins the crop key
//     (package dedup), under which a stored result is reused: "value" (its
//     value joins the key), "-" (it does not: where and how the result is
//     stored, or who is told), or one of the parts the key was first made
//     of, "source", "size" and "tenant". A field that changes the result
//     but is tagged "-" makes dedup reuse a wrong result.
//   - fingerprint: its place among the fingerprint's per-field tags ("-":
//     not a parameter, requestId alone), the next free number for a new
//     field: a fingerprint kept on a record names the field that differs by
//     that place, so places never move.
//
// Absent has one spelling in JSON, leaving the field out: null is refused
// for every field, and "" for those tagged strictjson:"nonempty" (where the
// OpenAPI schema has an enum or a minLength). requestId "" is refused by
// Validate as missing. In CSV and flags an empty value is an absent one.
type Request struct {
	RequestID string `json:"requestId" flag:"request-id" help:"request id (required; 1–128 of A-Z a-z 0-9 . _ : -)" cropkey:"-" fingerprint:"-"`
	// The image, by URL or base64: exactly one. Records keep what stands
	// for it (status.Record's Source, SourceURL and SourceDigest).
	ImageURL    string `json:"imageUrl,omitempty" strictjson:"nonempty" flag:"url" help:"source image URL" cropkey:"source" fingerprint:"0"`
	ImageBase64 string `json:"imageBase64,omitempty" strictjson:"nonempty" flag:"-" cropkey:"source" fingerprint:"1"`
	// Params are what the request's status record keeps of it too.
	Params `json:",inline"`
	// Dedup false opts the request out of result reuse and coalescing
	// (package dedup): it is paid for even when the same crop was stored
	// before. Absent (nil) or true follows the fleet's CROPQ_DEDUP_SCOPE.
	// Records do not keep it: a request with it keeps its payload in the
	// backlog (backlog.RequestOf).
	Dedup *bool `json:"dedup,omitempty" flag:"dedup" help:"false: never reuse an earlier result of the same crop, pay for this one (default: the fleet's CROPQ_DEDUP_SCOPE)" default:"true" cropkey:"-" fingerprint:"11"`
}

// Params are a request's parameters that its status record keeps too
// (embedded in both tasks.Request and status.Record, with the same JSON
// names), so that the record tells what was asked and the request can be
// rebuilt from it. Its fields are Request's: see there for their tags.
type Params struct {
	TargetWidth  int `json:"targetWidth,omitempty" flag:"width" help:"target width in pixels (100–5000)" cropkey:"size" fingerprint:"2"`
	TargetHeight int `json:"targetHeight,omitempty" flag:"height" help:"target height in pixels (100–5000)" cropkey:"size" fingerprint:"3"`
	// Destination; empty means the worker's configured bucket and template.
	Bucket      string `json:"bucket,omitempty" strictjson:"nonempty" flag:"bucket" help:"destination bucket (default CROPQ_S3_BUCKET)" cropkey:"-" fingerprint:"4"`
	KeyTemplate string `json:"keyTemplate,omitempty" flag:"key-template" help:"S3 key of the result; placeholders {requestId} {width} {height} {ext} {date} (default CROPQ_KEY_TEMPLATE)" cropkey:"-" fingerprint:"5"`
	// Metadata is stored with the object (S3 user metadata).
	Metadata map[string]string `json:"metadata,omitempty" flag:"metadata" help:"S3 user metadata of the result, key=value (repeatable)" cropkey:"-" fingerprint:"6"`
	BatchID  string            `json:"batchId,omitempty" strictjson:"nonempty" flag:"batch" help:"batch id (for cropq wait --batch and GET /v1/batches/ID)" cropkey:"-" fingerprint:"7"`
	// CallbackURL, when set, is POSTed the request's terminal state.
	CallbackURL string `json:"callbackUrl,omitempty" flag:"callback-url" help:"URL POSTed the terminal state (needs CROPQ_WEBHOOK_SECRET on the workers)" cropkey:"-" fingerprint:"8"`
	// Priority is the request's lane: urgent before normal before backfill
	// (strictly); empty means normal.
	Priority string `json:"priority,omitempty" strictjson:"nonempty" flag:"priority" help:"urgent, normal (default) or backfill" default:"normal" cropkey:"-" fingerprint:"9"`
	// Tenant shares the account's quota with the other tenants by weight
	// (CROPQ_TENANT_WEIGHTS); empty means "default". Over HTTP it is the
	// token's tenant. It joins the crop key under CROPQ_DEDUP_SCOPE=tenant.
	Tenant string `json:"tenant,omitempty" strictjson:"nonempty" flag:"tenant" help:"tenant: 1–64 of a-z 0-9 . _ - (default \"default\")" default:"default" cropkey:"tenant" fingerprint:"10"`
}

// Priorities, in lane order: a lane is served only while every lane before
// it is empty.
const (
	PriorityUrgent   = "urgent"
	PriorityNormal   = "normal"
	PriorityBackfill = "backfill"
)

// Priorities lists the lanes in order (strict: urgent, normal, backfill).
var Priorities = []string{PriorityUrgent, PriorityNormal, PriorityBackfill}

// DefaultTenant is the tenant of a request that names none (and of a bare
// API token).
const DefaultTenant = "default"

// MaxTenantLen bounds a tenant name.
const MaxTenantLen = 64

// EffectivePriority is p's priority with its default filled in.
func (p Params) EffectivePriority() string {
	if p.Priority == "" {
		return PriorityNormal
	}
	return p.Priority
}

// EffectiveTenant is p's tenant with its default filled in.
func (p Params) EffectiveTenant() string {
	if p.Tenant == "" {
		return DefaultTenant
	}
	return p.Tenant
}

// Effective is p with its defaults filled in, as status records keep it.
func (p Params) Effective() Params {
	p.Priority, p.Tenant = p.EffectivePriority(), p.EffectiveTenant()
	return p
}

// ImplicitDefaults is r with a default priority or tenant left out, as
// producers send them (and as the wire format was before they existed).
func (r Request) ImplicitDefaults() Request {
	if r.Priority == PriorityNormal {
		r.Priority = ""
	}
	if r.Tenant == DefaultTenant {
		r.Tenant = ""
	}
	return r
}

// ValidateTenant checks a tenant name: 1–64 characters of a-z 0-9 . _ -,
// safe in Redis keys (and hash tags), metric labels and configuration lists
// (no , = or :).
func ValidateTenant(t string) error {
	switch {
	case t == "":
		return &cropapi.ValidationError{Field: "tenant", Reason: "is required"}
	case len(t) > MaxTenantLen:
		return &cropapi.ValidationError{Field: "tenant", Reason: fmt.Sprintf("must be at most %d characters, got %d", MaxTenantLen, len(t))}
	case !tenantPattern.MatchString(t):
		return &cropapi.ValidationError{Field: "tenant", Reason: fmt.Sprintf("must be 1–%d characters of a-z 0-9 . _ - (lower case), got %.70q", MaxTenantLen, t)}
	}
	return nil
}

// validatePriority checks a non-empty priority.
func validatePriority(p string) error {
	if !slices.Contains(Priorities, p) {
		return &cropapi.ValidationError{Field: "priority", Reason: fmt.Sprintf("must be one of %s, got %.40q", strings.Join(Priorities, ", "), p)}
	}
	return nil
}

// Field describes one field of Request, for entrances that are not JSON.
type Field struct {
	Name string // JSON name and CSV column
	Flag string // CLI flag name, "" for none
	Help string
	// Default is the value an empty field stands for ("" for none): the
	// fingerprint counts the field as empty when it holds it.
	Default string
	Kind    reflect.Kind // String, Int, Map or Pointer (a *bool)
	// NonEmpty: "" is refused, not taken as absent (JSON; the CLI's flags).
	NonEmpty bool
	// CropKey is the field's part in the crop key (its cropkey tag: see
	// Request): "value", "-", "source", "size" or "tenant"; "" when the tag
	// is missing, which a test refuses.
	CropKey string
	// FingerprintTag is the field's place among a fingerprint's per-field
	// tags (its fingerprint tag), -1 when it is not a parameter.
	FingerprintTag int
	index          []int
}

// Crop key parts of a field (Field.CropKey).
const (
	CropKeyValue  = "value"  // its value joins the crop key
	CropKeyNone   = "-"      // it does not change the result
	CropKeySource = "source" // the image: keyed by its identity (package dedup)
	CropKeySize   = "size"   // the target size
	CropKeyTenant = "tenant" // joins the key when results are each tenant's
)

var requestFields = func() []Field {
	var out []Field
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Request]()) {
		if f.Anonymous {
			continue // Params: its fields are listed themselves
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		flag := f.Tag.Get("flag")
		if flag == "-" {
			flag = ""
		}
		tag := -1
		if n, err := strconv.Atoi(f.Tag.Get("fingerprint")); err == nil {
			tag = n
		}
		out = append(out, Field{Name: name, Flag: flag, Help: f.Tag.Get("help"), Default: f.Tag.Get("default"), Kind: f.Type.Kind(),
			NonEmpty: f.Tag.Get("strictjson") == "nonempty", CropKey: f.Tag.Get("cropkey"), FingerprintTag: tag, index: f.Index})
	}
	return out
}()

// fingerprinted are the fields with a fingerprint tag, in the tags' order:
// the order of the fingerprint's digest and tags, whatever the order of
// the fields in the struct.
var fingerprinted = func() []Field {
	var out []Field
	for _, f := range requestFields {
		if f.FingerprintTag >= 0 {
			out = append(out, f)
		}
	}
	slices.SortStableFunc(out, func(a, b Field) int { return a.FingerprintTag - b.FingerprintTag })
	return out
}()

// Fields lists Request's fields in declaration order (Params' in its place).
func Fields() []Field { return append([]Field(nil), requestFields...) }

// SetText sets the field named name of r from its text form (a CSV cell, a
// CLI flag): integers in decimal, metadata as a JSON object or key=value
// (which adds one entry). An unknown name or a malformed value is a
// *cropapi.ValidationError naming the field.
func (r *Request) SetText(name, text string) error {
	var f *Field
	for i := range requestFields {
		if requestFields[i].Name == name {
			f = &requestFields[i]
		}
	}
	if f == nil {
		return &cropapi.ValidationError{Field: name, Reason: "is not a request field"}
	}
	v := reflect.ValueOf(r).Elem().FieldByIndex(f.index)
	switch f.Kind {
	case reflect.String:
		v.SetString(text)
	case reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(text))
		if err != nil {
			return &cropapi.ValidationError{Field: name, Reason: fmt.Sprintf("must be an integer, got %.40q", text)}
		}
		v.SetInt(int64(n))
	case reflect.Pointer: // *bool
		b, err := strconv.ParseBool(strings.TrimSpace(text))
		if err != nil {
			return &cropapi.ValidationError{Field: name, Reason: fmt.Sprintf("must be true or false, got %.40q", text)}
		}
		v.Set(reflect.ValueOf(&b))
	case reflect.Map:
		if text == "" {
			return nil
		}
		m := v.Interface().(map[string]string)
		if m == nil {
			m = map[string]string{}
			v.Set(reflect.ValueOf(m))
		}
		if strings.HasPrefix(strings.TrimSpace(text), "{") {
			var add map[string]string
			if err := strictjson.Unmarshal([]byte(text), &add); err != nil {
				return &cropapi.ValidationError{Field: name, Reason: "must be a JSON object of strings or key=value"}
			}
			for k, val := range add {
				m[k] = val
			}
			return nil
		}
		k, val, ok := strings.Cut(text, "=")
		if !ok {
			return &cropapi.ValidationError{Field: name, Reason: fmt.Sprintf("must be key=value, got %.40q", text)}
		}
		m[k] = val
	}
	return nil
}

// Limits of the fields that are ours rather than the API's.
const (
	MaxRequestIDLen   = 128
	MaxMetadataPairs  = 16
	MaxMetadataKeyLen = 64
	MaxMetadataValLen = 256
	MaxMetadataBytes  = 1792 // S3's 2 KiB per object, less what storage adds
	MaxKeyTemplateLen = 512
	MaxBucketLen      = 63
	MaxCallbackURLLen = 2048
	MaxInputKeyLen    = 1024
)

// ValidateRequestID checks a request id: 1–128 characters of letters,
// digits and . _ : - (starting with a letter or digit, no ".."), so that it is
// safe in Redis keys, S3 keys, logs and URLs.
func ValidateRequestID(id string) error {
	return validateID("requestId", id)
}

func validateID(field, id string) error {
	switch {
	case id == "":
		return &cropapi.ValidationError{Field: field, Reason: "is required"}
	case len(id) > MaxRequestIDLen:
		return &cropapi.ValidationError{Field: field, Reason: fmt.Sprintf("must be at most %d characters, got %d", MaxRequestIDLen, len(id))}
	case !requestIDPattern.MatchString(id) || strings.Contains(id, ".."):
		return &cropapi.ValidationError{Field: field, Reason: "must start with a letter or digit and contain only letters, digits and . _ : - (no \"..\")"}
	}
	return nil
}

// ValidateBatchID checks a batch id: the same rules as a request id.
func ValidateBatchID(id string) error { return validateID("batchId", id) }

// Rules are what an entrance checks beyond the request's own form.
type Rules struct {
	// Limits are the API's input rules (zero fields: cropapi.DefaultLimits).
	Limits cropapi.Limits
	// CallbackAllow lists addresses a callbackUrl may name literally although
	// they are private or loopback (CROPQ_WEBHOOK_ALLOW); names are checked
	// when the callback is delivered.
	CallbackAllow []netip.Prefix
	// AnyCallbackAddress skips the callback address check: the worker's,
	// whose deliveries are guarded when they dial.
	AnyCallbackAddress bool
	// Destinations, when set, says where a tenant may write (nil: anywhere).
	Destinations Destinations
}

// Destinations draws the walls between tenants in S3 (cropq's own are set
// by CROPQ_TENANT_BUCKETS): which buckets a tenant may name, and where no key
// template may reach.
type Destinations interface {
	// Check reports whether tenant may have its result written to key (as
	// rendered from the request's template; "" for the worker's own) in
	// bucket ("" for the default), as a *cropapi.ValidationError naming
	// bucket or keyTemplate when it may not.
	Check(tenant, bucket, key string) error
}

// Validate checks r as every entrance does: the API's rules, so that no paid
// call is spent on input the API refuses, and everything that would fail
// only after the paid call (the destination's key and bucket), so that it
// fails here instead. It returns a *cropapi.ValidationError naming the field.
func (r Request) Validate(rules Rules) error {
	if err := ValidateRequestID(r.RequestID); err != nil {
		return err
	}
	if err := r.checkUTF8(); err != nil {
		return err
	}
	// The API takes both sources and silently prefers base64; a producer
	// that sends both has made a mistake we would only bury.
	if r.ImageURL != "" && r.ImageBase64 != "" {
		return &cropapi.ValidationError{Field: "imageUrl", Reason: "must not be set together with imageBase64: give exactly one image source"}
	}
	if err := rules.Limits.Validate(r.cropRequest()); err != nil {
		return err
	}
	return r.validateRest(rules)
}

// ValidateDefaults checks the priority and tenant (also those a bulk load
// applies to rows without their own).
func (p Params) ValidateDefaults() error {
	if p.Priority != "" {
		if err := validatePriority(p.Priority); err != nil {
			return err
		}
	}
	if p.Tenant != "" {
		return ValidateTenant(p.Tenant)
	}
	return nil
}

// validateRest checks everything but the image and the id.
func (r Request) validateRest(rules Rules) error {
	if err := r.checkUTF8(); err != nil {
		return err
	}
	if err := r.ValidateDefaults(); err != nil {
		return err
	}
	if r.CallbackURL != "" {
		allow := rules.CallbackAllow
		if rules.AnyCallbackAddress {
			allow = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
		}
		if err := ValidateCallbackURL(r.CallbackURL, allow); err != nil {
			return err
		}
	}
	if r.Bucket != "" {
		if err := ValidateBucket(r.Bucket); err != nil {
			return err
		}
	}
	if len(r.KeyTemplate) > MaxKeyTemplateLen {
		return &cropapi.ValidationError{Field: "keyTemplate", Reason: fmt.Sprintf("must be at most %d characters, got %d", MaxKeyTemplateLen, len(r.KeyTemplate))}
	}
	var key string
	if r.KeyTemplate != "" {
		// Render it now, as the worker will after the crop: a template that
		// cannot make a safe key must not cost a paid call. Placeholder values
		// are escaped, and the longest extension a result can have stands
		// for every format.
		k, err := objectkey.Render(r.KeyTemplate, objectkey.Vars{RequestID: r.RequestID, Width: r.TargetWidth, Height: r.TargetHeight,
			Ext: longestExt, Date: time.Now()})
		if err != nil {
			var ke *objectkey.Error
			if errors.As(err, &ke) {
				return &cropapi.ValidationError{Field: "keyTemplate", Reason: ke.Reason}
			}
			return &cropapi.ValidationError{Field: "keyTemplate", Reason: "cannot render a key"}
		}
		key = k
	}
	if rules.Destinations != nil {
		if err := rules.Destinations.Check(r.Tenant, r.Bucket, key); err != nil {
			return err
		}
	}
	if r.BatchID != "" {
		if err := ValidateBatchID(r.BatchID); err != nil {
			return err
		}
	}
	if len(r.Metadata) > MaxMetadataPairs {
		return &cropapi.ValidationError{Field: "metadata", Reason: fmt.Sprintf("must have at most %d entries, got %d", MaxMetadataPairs, len(r.Metadata))}
	}
	total := 0
	for k, v := range r.Metadata {
		total += len(k) + len(v)
		if reservedMetadata[k] {
			return &cropapi.ValidationError{Field: "metadata", Reason: fmt.Sprintf("key %q is cropq's own (request-id, api-request-id, width, height)", k)}
		}
		if len(k) > MaxMetadataKeyLen || !metadataKey.MatchString(k) {
			return &cropapi.ValidationError{Field: "metadata", Reason: fmt.Sprintf("key %.70q must be 1–%d lower-case letters, digits and -", k, MaxMetadataKeyLen)}
		}
		if len(v) > MaxMetadataValLen || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return &cropapi.ValidationError{Field: "metadata", Reason: fmt.Sprintf("value of %q must be at most %d printable characters", k, MaxMetadataValLen)}
		}
	}
	if total > MaxMetadataBytes {
		return &cropapi.ValidationError{Field: "metadata", Reason: fmt.Sprintf("keys and values must add up to at most %d bytes, got %d (S3 keeps 2 KiB of metadata per object, and cropq's own takes the rest)", MaxMetadataBytes, total)}
	}
	return nil
}

// ValidateBucket checks a bucket name as S3 names buckets.
func ValidateBucket(b string) error {
	if len(b) > MaxBucketLen || !bucketPattern.MatchString(b) || strings.Contains(b, "..") || looksLikeIPv4(b) {
		return &cropapi.ValidationError{Field: "bucket", Reason: "must be a valid S3 bucket name (3–63 lower-case letters, digits, . and -; no \"..\", not an IP address)"}
	}
	return nil
}

// longestExt is the longest file extension a stored result can have
// (storage's formats: png, jpg, gif, webp, bmp).
const longestExt = "webp"

// reservedMetadata are the keys storage writes itself.
var reservedMetadata = map[string]bool{"request-id": true, "api-request-id": true, "width": true, "height": true}

// checkUTF8 refuses a string field that is not valid UTF-8: the JSON
// entrances refuse it while decoding, and the library must not store a
// replacement character where the fingerprint saw other bytes.
func (r Request) checkUTF8() error {
	v := reflect.ValueOf(r)
	for _, f := range requestFields {
		fv := v.FieldByIndex(f.index)
		switch f.Kind {
		case reflect.String:
			if !utf8.ValidString(fv.String()) {
				return &cropapi.ValidationError{Field: f.Name, Reason: "must be valid UTF-8"}
			}
		case reflect.Map:
			for k, val := range fv.Interface().(map[string]string) {
				if !utf8.ValidString(k) || !utf8.ValidString(val) {
					return &cropapi.ValidationError{Field: f.Name, Reason: "keys and values must be valid UTF-8"}
				}
			}
		}
	}
	return nil
}

// looksLikeIPv4 reports a bucket name in IP address form, which S3 refuses.
func looksLikeIPv4(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// ParseCallbackURL parses a callback URL and checks its shape, the one
// check every holder of a callback URL shares (the entrances, the worker,
// package webhook): absolute http or https, a host, no credentials, a valid
// port, at most MaxCallbackURLLen bytes. Its errors are
// *cropapi.ValidationError on field callbackUrl, and never repeat the URL,
// whose query may hold a receiver's token.
func ParseCallbackURL(raw string) (*url.URL, error) {
	bad := func(reason string) error { return &cropapi.ValidationError{Field: "callbackUrl", Reason: reason} }
	if len(raw) > MaxCallbackURLLen {
		return nil, bad(fmt.Sprintf("must be at most %d bytes, got %d", MaxCallbackURLLen, len(raw)))
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, bad("must be a valid URL")
	case !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https"):
		return nil, bad("must be an absolute http or https URL")
	case u.Host == "" || u.Hostname() == "":
		return nil, bad("must be an absolute http or https URL with a host")
	case u.User != nil:
		return nil, bad("must not carry credentials (user:password)")
	case !cropapi.ValidPort(u.Port()):
		return nil, bad(fmt.Sprintf("port %q must be 1–65535", u.Port()))
	}
	return u, nil
}

// ValidateCallbackURL checks a callback URL: absolute http(s), a host, no
// credentials, at most MaxCallbackURLLen bytes, and no literal address that
// is private, loopback, link-local or a metadata service, in any spelling
// (unless inside allow). A name is checked again when it is dialled.
func ValidateCallbackURL(raw string, allow []netip.Prefix) error {
	u, err := ParseCallbackURL(raw)
	if err != nil {
		return err
	}
	h, err := netguard.Canonical(u.Hostname())
	if err != nil {
		return &cropapi.ValidationError{Field: "callbackUrl", Reason: err.Error()}
	}
	for _, p := range allow {
		if h.Addr.IsValid() && (p.Contains(h.Addr.WithZone("").Unmap()) || p.Contains(h.Addr.WithZone(""))) {
			return nil
		}
	}
	if err := netguard.CheckHost(u.Hostname()); err != nil {
		return &cropapi.ValidationError{Field: "callbackUrl", Reason: err.Error()}
	}
	return nil
}

func (r Request) cropRequest() cropapi.Request {
	return cropapi.Request{ImageURL: r.ImageURL, ImageBase64: r.ImageBase64, TargetWidth: r.TargetWidth, TargetHeight: r.TargetHeight}
}

// Fingerprint identifies everything a request asks for but its id, so that
// a request id submitted again can be told apart from a new request. It is
// a strong digest of all fields, then a short tag per field (in the order
// of their fingerprint tags) that only serves to name the field that
// differs. imageDigest is the SHA-256 (hex) of the decoded base64 image, ""
// for a URL source.
func (r Request) Fingerprint(imageDigest string) string {
	all := sha256.New()
	tags := make([]byte, 0, 2*len(fingerprinted))
	for _, f := range fingerprinted {
		text := r.text(f)
		if f.Name == "imageBase64" {
			text = imageDigest
		}
		sum := sha256.Sum256([]byte(f.Name + "\x00" + text))
		if text != "" {
			// Empty fields stay out, so a field added later leaves the
			// fingerprints of requests that do not use it unchanged.
			fmt.Fprintf(all, "%s\x00%d\x00%s\x00", f.Name, len(text), text)
		}
		tags = append(tags, sum[:2]...)
	}
	// Compact (it is kept on every record): 22 + 1 + 8/3 characters a field.
	return b64.EncodeToString(all.Sum(nil)[:16]) + "." + b64.EncodeToString(tags)
}

// text is f's value in r as the fingerprint and the crop key see it: ""
// when empty or when it holds its default.
func (r Request) text(f Field) string {
	v := reflect.ValueOf(r).FieldByIndex(f.index)
	var text string
	switch f.Kind {
	case reflect.Map:
		m := v.Interface().(map[string]string)
		if len(m) > 0 {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var b strings.Builder
			for _, k := range keys {
				fmt.Fprintf(&b, "%q=%q;", k, m[k])
			}
			text = b.String()
		}
	case reflect.Pointer: // *bool: nil is empty
		if !v.IsNil() {
			text = strconv.FormatBool(v.Elem().Bool())
		}
	default:
		text = fmt.Sprint(v.Interface())
		if f.Kind == reflect.Int && text == "0" {
			text = ""
		}
	}
	if text == f.Default {
		// A field's default is the same request as the field left out
		// (priority "normal" is no priority), and a record written
		// before the field existed keeps matching.
		return ""
	}
	return text
}

// CropKeyValues are the fields of r whose value joins the crop key
// (cropkey:"value") as name, length and value, sorted by name and
// NUL-separated; "" when none is set, so that a field added later leaves
// the keys of requests that do not use it unchanged. Package dedup adds
// them to the parts the key was first made of.
func (r Request) CropKeyValues() string { return r.cropKeyValues(requestFields) }

func (r Request) cropKeyValues(fields []Field) string {
	var b strings.Builder
	names := make([]Field, 0, len(fields))
	for _, f := range fields {
		if f.CropKey == CropKeyValue {
			names = append(names, f)
		}
	}
	slices.SortFunc(names, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
	for _, f := range names {
		if text := r.text(f); text != "" {
			fmt.Fprintf(&b, "\x00%s\x00%d\x00%s", f.Name, len(text), text)
		}
	}
	return b.String()
}

var b64 = base64.RawURLEncoding

// FingerprintTags is fp's per-field tags dropped after the first n: the
// fingerprint a version with only those fields would have written for the
// same request, when the others were empty (for tests of old records).
func FingerprintTags(fp string, n int) string {
	strong, tags, _ := strings.Cut(fp, ".")
	b, _ := b64.DecodeString(tags)
	return strong + "." + b64.EncodeToString(b[:min(len(b), 2*n)])
}

// FingerprintDiff names the first field in which two fingerprints differ,
// "" when they are equal. A fingerprint written before a field existed
// lacks its tag; the field then counts as empty there.
func FingerprintDiff(have, want string) string {
	if have == want {
		return ""
	}
	hs, hts, _ := strings.Cut(have, ".")
	ws, wts, _ := strings.Cut(want, ".")
	if hs == ws {
		return ""
	}
	ht, _ := b64.DecodeString(hts)
	wt, _ := b64.DecodeString(wts)
	for _, f := range fingerprinted {
		a, b := tagAt(ht, f.FingerprintTag), tagAt(wt, f.FingerprintTag)
		if a == "" {
			a = emptyTag(f.Name)
		}
		if b == "" {
			b = emptyTag(f.Name)
		}
		if a != b {
			return f.Name
		}
	}
	return "parameters"
}

func tagAt(tags []byte, i int) string {
	if len(tags) < 2*(i+1) {
		return ""
	}
	return string(tags[2*i : 2*i+2])
}

func emptyTag(name string) string {
	sum := sha256.Sum256([]byte(name + "\x00"))
	return string(sum[:2])
}

var tenantPattern = regexp.MustCompile(`^[a-z0-9._-]+$`)
