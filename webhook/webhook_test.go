package webhook_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/webhook"
)

var (
	testSecret = []byte("test-secret-key")
	testNow    = time.Unix(1_700_000_000, 0)
)

func strconvI(n int64) string { return strconv.FormatInt(n, 10) }

func TestSignVerify(t *testing.T) {
	body := []byte(`{"requestId":"a"}`)
	ts := testNow.Unix()
	header := func(ts int64, sig string) http.Header {
		h := http.Header{}
		h.Set(webhook.HeaderTimestamp, strconvI(ts))
		h.Set(webhook.HeaderSignature, sig)
		return h
	}
	tests := []struct {
		name string
		h    http.Header
		body []byte
		want error
	}{
		{"valid", header(ts, webhook.Sign(testSecret, ts, body)), body, nil},
		{"rotating secrets", header(ts, webhook.Sign([]byte("old"), ts, body)+","+webhook.Sign(testSecret, ts, body)), body, nil},
		{"tampered body", header(ts, webhook.Sign(testSecret, ts, body)), []byte(`{"requestId":"b"}`), webhook.ErrBadSignature},
		{"wrong secret", header(ts, webhook.Sign([]byte("other"), ts, body)), body, webhook.ErrBadSignature},
		{"timestamp swapped", header(ts+1, webhook.Sign(testSecret, ts, body)), body, webhook.ErrBadSignature},
		{"missing signature", header(ts, ""), body, webhook.ErrBadSignature},
		{"missing timestamp", http.Header{webhook.HeaderSignature: {webhook.Sign(testSecret, ts, body)}}, body, webhook.ErrBadSignature},
		{"old timestamp", header(ts-3600, webhook.Sign(testSecret, ts-3600, body)), body, webhook.ErrStaleTimestamp},
		{"future timestamp", header(ts+3600, webhook.Sign(testSecret, ts+3600, body)), body, webhook.ErrStaleTimestamp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := webhook.Verify(testSecret, tt.h, tt.body, 5*time.Minute, testNow)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestSignFormat(t *testing.T) {
	sig := webhook.Sign(testSecret, 1, []byte("x"))
	assert.Regexp(t, `^v1=[0-9a-f]{64}$`, sig)
	assert.Equal(t, sig, webhook.Sign(testSecret, 1, []byte("x")))
	assert.NotEqual(t, sig, webhook.Sign(testSecret, 2, []byte("x")))
}
