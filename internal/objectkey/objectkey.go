// Package objectkey renders the S3 key of a result from a key template. It
// is shared by the entrances, which render a request's template before
// anything is paid for, and by storage, which renders it for the upload.
package objectkey

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// DefaultTemplate is where a result goes unless configured otherwise.
const DefaultTemplate = "crops/{requestId}/{width}x{height}.{ext}"

// MaxLen is S3's limit on a key, in bytes.
const MaxLen = 1024

// Vars fill a key template.
type Vars struct {
	RequestID     string
	Width, Height int
	Ext           string    // file extension without the dot
	Date          time.Time // {date} renders as 2006-01-02
}

// Error is a key template that cannot produce a safe key.
type Error struct {
	Template string
	Reason   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("key template %q: %s", e.Template, e.Reason)
}

// Render fills tmpl's placeholders ({requestId} {width} {height} {ext}
// {date}). Values are path-escaped, so whatever the request id holds ("/",
// "..", control characters) it stays one segment: the key starts with the
// template's literal prefix, has no "." or ".." segment and no empty one, and
// fits S3's 1024 bytes.
func Render(tmpl string, v Vars) (string, error) {
	if tmpl == "" {
		tmpl = DefaultTemplate
	}
	if strings.HasPrefix(tmpl, "/") {
		return "", &Error{Template: tmpl, Reason: "must not start with /"}
	}
	if v.RequestID == "" {
		return "", &Error{Template: tmpl, Reason: "empty request id"}
	}
	date := v.Date
	if date.IsZero() {
		date = time.Now()
	}
	r := strings.NewReplacer(
		"{requestId}", escape(v.RequestID),
		"{width}", fmt.Sprint(v.Width),
		"{height}", fmt.Sprint(v.Height),
		"{ext}", escape(v.Ext),
		"{date}", date.UTC().Format("2006-01-02"),
	)
	key := r.Replace(tmpl)
	if strings.ContainsAny(key, "{}") {
		return "", &Error{Template: tmpl, Reason: "unknown placeholder (known: {requestId} {width} {height} {ext} {date})"}
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", &Error{Template: tmpl, Reason: fmt.Sprintf("renders an empty, . or .. segment: %.80q", key)}
		}
	}
	if len(key) > MaxLen {
		return "", &Error{Template: tmpl, Reason: fmt.Sprintf("renders a key of %d bytes (max %d)", len(key), MaxLen)}
	}
	if prefix, _, _ := strings.Cut(tmpl, "{"); !strings.HasPrefix(key, prefix) {
		return "", &Error{Template: tmpl, Reason: "rendered key escapes the template's prefix"}
	}
	return key, nil
}

// escape makes s one safe key segment: path-escaped, and never "." or "..".
func escape(s string) string {
	e := url.PathEscape(s) // "/" → %2F, controls and "%" escaped
	switch e {
	case ".", "..":
		return strings.Repeat("%2E", len(e))
	}
	return e
}
