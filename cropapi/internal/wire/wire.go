// Package wire is the Image Cropping API's wire contract, shared by the
// client (package cropapi) and its test double (cropapi/cropapitest): the
// response envelope and the v2 signature. It is internal: cropq promises
// the client's behaviour, not these shapes.
package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Envelope is the API's response body: the gateway layer (code, type,
// message, request_id, possibly wrapped in error_response) and the business
// layer (success, resCode, resMessage, requestId, data). Servers (the
// emulator) encode it; clients decode it.
type Envelope struct {
	// Gateway layer.
	GatewayCode      FlexString    `json:"code"`
	Type             string        `json:"type,omitempty"`
	Message          string        `json:"message,omitempty"`
	GatewayRequestID string        `json:"request_id,omitempty"`
	ErrorResponse    *GatewayReply `json:"error_response,omitempty"`

	// Business layer.
	Success    *bool         `json:"success,omitempty"`
	ResCode    *FlexInt      `json:"resCode,omitempty"`
	ResMessage string        `json:"resMessage,omitempty"`
	RequestID  string        `json:"requestId,omitempty"`
	Data       *EnvelopeData `json:"data,omitempty"`
	TraceID    string        `json:"_trace_id_,omitempty"`
}

// GatewayReply is the gateway's error, as some gateways wrap it.
type GatewayReply struct {
	Code      FlexString `json:"code"`
	Type      string     `json:"type,omitempty"`
	Message   string     `json:"message,omitempty"`
	Msg       string     `json:"msg,omitempty"`
	RequestID string     `json:"request_id,omitempty"`
}

// EnvelopeData is the business payload of a successful crop.
type EnvelopeData struct {
	ImageURL string  `json:"imageUrl"`
	Usage    FlexInt `json:"usage"`
	Width    FlexInt `json:"width"`
	Height   FlexInt `json:"height"`
	Class    string  `json:"class,omitempty"`
}

// FlexString decodes a JSON string or number (gateways differ) as a string.
type FlexString string

func (s *FlexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = FlexString(v)
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		*s = ""
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("code: want string or number")
	}
	*s = FlexString(n.String())
	return nil
}

// FlexInt decodes a JSON number or a numeric string (the vendor's samples send
// numbers as strings) as an int.
type FlexInt int

func (n *FlexInt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*n = 0
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		b = []byte(strings.TrimSpace(s))
	}
	v, err := strconv.ParseInt(string(b), 10, 0)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(b), 64)
		if ferr != nil || f != float64(int64(f)) {
			return fmt.Errorf("want an integer, got %.20q", b)
		}
		v = int64(f)
	}
	*n = FlexInt(v)
	return nil
}

// Query parameter values fixed by the v2 signing scheme.
const (
	PartnerID  = "aidge"
	SignMethod = "sha256"
	SignVer    = "v2"
)

// Sign returns the v2 signature of a call made at timestamp ts (Unix
// milliseconds as a decimal string): the upper-case hex HMAC-SHA256, keyed with
// the app secret, of the app secret followed by the timestamp. Neither the API
// name nor the body is signed.
func Sign(appSecret, ts string) string {
	mac := hmac.New(sha256.New, []byte(appSecret))
	mac.Write([]byte(appSecret))
	mac.Write([]byte(ts))
	return strings.ToUpper(hex.EncodeToString(mac.Sum(nil)))
}

// Timestamp formats t as the API expects: Unix milliseconds, decimal.
func Timestamp(t time.Time) string {
	return strconv.FormatInt(t.UnixMilli(), 10)
}

// VerifySignature reports whether sign is the v2 signature of ts under
// appSecret, in constant time. Servers (the emulator) use it.
func VerifySignature(appSecret, ts, sign string) bool {
	want := Sign(appSecret, ts)
	return hmac.Equal([]byte(want), []byte(sign))
}
