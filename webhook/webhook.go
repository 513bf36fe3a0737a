// Package webhook is for the receivers of cropq's callbacks: once a crop
// request reaches a terminal state, cropq POSTs an Event (JSON) to its
// callbackUrl, signed with the shared secret (CROPQ_WEBHOOK_SECRET). A
// receiver checks the signature and the timestamp with Verify before it
// trusts the body:
//
//	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
//	if err := webhook.Verify(secret, r.Header, body, 5*time.Minute, time.Now()); err != nil {
//		http.Error(w, "bad signature", http.StatusUnauthorized)
//		return
//	}
//	var ev webhook.Event
//	_ = json.Unmarshal(body, &ev)
//
// A delivery that fails is retried, so a receiver may see an event more
// than once: RequestID and State identify it.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers set on every delivery.
const (
	HeaderTimestamp = "X-Cropq-Timestamp"
	HeaderSignature = "X-Cropq-Signature"
)

// Terminal states an Event may report.
const (
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCanceled  = "canceled"
)

// Event is the JSON body POSTed to the callback URL.
type Event struct {
	RequestID    string    `json:"requestId"`
	BatchID      string    `json:"batchId,omitempty"`
	State        string    `json:"state"`
	Bucket       string    `json:"bucket,omitempty"`
	Key          string    `json:"key,omitempty"`
	ErrorCode    string    `json:"errorCode,omitempty"`
	ErrorMessage string    `json:"errorMessage,omitempty"`
	At           time.Time `json:"at"`
}

// Errors returned by Verify.
var (
	ErrBadSignature   = errors.New("webhook: bad signature")
	ErrStaleTimestamp = errors.New("webhook: timestamp outside allowed skew")
)

// Sign returns the X-Cropq-Signature value for ts and body:
// "v1=" + hex(HMAC-SHA256(secret, "<ts>." + body)). The timestamp is signed
// so a captured request cannot be replayed later with a fresh header.
func Sign(secret []byte, ts int64, body []byte) string {
	return "v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify is for receivers: it checks the signature of body in constant time
// and that the timestamp is within maxSkew of now. Several comma-separated
// v1= values are accepted, so a sender can sign with two secrets while
// rotating.
func Verify(secret []byte, h http.Header, body []byte, maxSkew time.Duration, now time.Time) error {
	ts, err := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: missing or malformed %s", ErrBadSignature, HeaderTimestamp)
	}
	want := mac(secret, ts, body)
	ok := false
	for v := range strings.SplitSeq(h.Get(HeaderSignature), ",") {
		hexSig, found := strings.CutPrefix(strings.TrimSpace(v), "v1=")
		if !found {
			continue
		}
		got, err := hex.DecodeString(hexSig)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	skew := now.Sub(time.Unix(ts, 0))
	if skew < 0 {
		skew = -skew
	}
	if skew > maxSkew {
		return fmt.Errorf("%w: %s off", ErrStaleTimestamp, skew.Truncate(time.Second))
	}
	return nil
}
