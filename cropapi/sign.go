package cropapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

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
