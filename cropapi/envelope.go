package cropapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cropq/cropq/cropapi/internal/wire"
)

// Result is a successful crop.
type Result struct {
	// ImageURL is the short-lived presigned URL of the cropped image.
	ImageURL string
	// ExpiresAt is when ImageURL stops working, from its Expires parameter;
	// zero when the URL does not say. It is on the vendor's clock: compare
	// it with no local clock (see Lifetime).
	ExpiresAt time.Time
	// Lifetime is how long ImageURL lives from the answer: ExpiresAt less
	// the vendor's own time at the answer (its Date header), so that a
	// worker whose clock is off still knows it. Zero when either is missing.
	Lifetime time.Duration
	Width    int
	Height   int
	// Usage is what the call was billed.
	Usage int
	// RequestID is the API's requestId, TraceID its _trace_id_.
	RequestID string
	TraceID   string
}

const maxErrBody = 256

// DecodeResponse turns an HTTP answer into a Result or one of this package's
// errors, in the order the protocol page gives: transport, gateway, business.
func DecodeResponse(status int, header http.Header, body []byte) (Result, error) {
	var env wire.Envelope
	jsonErr := json.Unmarshal(body, &env)

	if status < 200 || status > 299 {
		te := &TransportError{Op: "call", StatusCode: status, Body: clip(body)}
		if header != nil {
			te.RetryAfter = parseRetryAfter(header.Get("Retry-After"), time.Now())
		}
		if jsonErr == nil {
			if ge := gatewayError(&env); ge != nil {
				te.Err = ge
			}
		}
		return Result{}, te
	}
	if jsonErr != nil {
		return Result{}, &TransportError{Op: "decode body", StatusCode: status, Body: clip(body), Err: jsonErr}
	}
	if ge := gatewayError(&env); ge != nil {
		return Result{}, ge
	}
	if env.Success == nil && env.ResCode == nil {
		return Result{}, &TransportError{Op: "decode body", StatusCode: status, Body: clip(body), Err: fmt.Errorf("neither success nor resCode in body")}
	}
	resCode := CodeSuccess
	if env.ResCode != nil {
		resCode = int(*env.ResCode)
	}
	if (env.Success != nil && !*env.Success) || resCode != CodeSuccess {
		if resCode == CodeSuccess {
			resCode = CodeSystemError // success=false with resCode 200: treat as a system error
		}
		return Result{}, &APIError{ResCode: resCode, Message: env.ResMessage, RequestID: env.RequestID, TraceID: env.TraceID}
	}
	if env.Data == nil || env.Data.ImageURL == "" {
		return Result{}, &TransportError{Op: "decode body", StatusCode: status, Body: clip(body), Err: fmt.Errorf("success without data.imageUrl")}
	}
	res := Result{
		ImageURL:  env.Data.ImageURL,
		Width:     int(env.Data.Width),
		Height:    int(env.Data.Height),
		Usage:     int(env.Data.Usage),
		RequestID: env.RequestID,
		TraceID:   env.TraceID,
	}
	res.ExpiresAt, _ = URLExpiry(res.ImageURL)
	if header != nil && !res.ExpiresAt.IsZero() {
		if at, err := http.ParseTime(header.Get("Date")); err == nil && res.ExpiresAt.After(at) {
			res.Lifetime = res.ExpiresAt.Sub(at)
		}
	}
	return res, nil
}

// gatewayError returns the gateway's refusal in env, or nil when the gateway
// let the call through (code absent or "0").
func gatewayError(env *wire.Envelope) *GatewayError {
	if r := env.ErrorResponse; r != nil && r.Code != "" && r.Code != "0" {
		msg := r.Message
		if msg == "" {
			msg = r.Msg
		}
		rid := r.RequestID
		if rid == "" {
			rid = env.GatewayRequestID
		}
		return &GatewayError{GatewayCode: string(r.Code), Type: r.Type, Message: msg, RequestID: rid}
	}
	if env.GatewayCode != "" && env.GatewayCode != "0" {
		return &GatewayError{GatewayCode: string(env.GatewayCode), Type: env.Type, Message: env.Message, RequestID: env.GatewayRequestID}
	}
	return nil
}

// URLExpiry reads the absolute expiry (Unix seconds) from an OSS presigned
// URL's Expires parameter.
func URLExpiry(raw string) (time.Time, bool) {
	u, err := url.Parse(raw)
	if err != nil {
		return time.Time{}, false
	}
	v := u.Query().Get("Expires")
	if v == "" {
		return time.Time{}, false
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, false
	}
	return time.Unix(sec, 0), true
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func clip(b []byte) string {
	if len(b) > maxErrBody {
		b = b[:maxErrBody]
	}
	return strings.ToValidUTF8(string(b), "?")
}
