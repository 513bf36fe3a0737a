// Package redact is cropq's one way of showing a URL in a message, a log
// line or a page without what may be a secret: user info (a password, a
// token), the query (signatures, app keys, a receiver's secret) and the
// fragment.
package redact

import (
	"errors"
	"net/url"
	"strings"
)

// URL is raw without user info, query and fragment. A URL that does not
// parse (a sentinel list of hosts, say) keeps its text with the user info
// cut out by hand, so that a message about a bad URL still shows it.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return byHand(raw)
	}
	u.User = nil
	u.RawQuery, u.ForceQuery = "", false
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// byHand drops "user:password@" after the scheme, and everything from the
// first '?' or '#'.
func byHand(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if j := strings.Index(raw, "://"); j >= 0 {
		rest := raw[j+3:]
		end := strings.IndexAny(rest, "/")
		if end < 0 {
			end = len(rest)
		}
		if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
			raw = raw[:j+3] + rest[at+1:]
		}
	}
	return raw
}

// Error rewrites, in place, the URL that net/http puts into its *url.Error
// (which would otherwise carry the whole query into logs and task
// histories), and returns err; other errors are returned as they are.
func Error(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = URL(ue.URL)
	}
	return err
}
