package cropapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeSampleResponse(t *testing.T) {
	body, err := os.ReadFile("testdata/sample_response.json")
	require.NoError(t, err)

	res, err := DecodeResponse(200, nil, body)
	require.NoError(t, err)
	assert.Equal(t, Result{
		ImageURL:  "https://ai-business-algo-pai.oss-ap-southeast-1.aliyuncs.com/ai_computing%2Ftmp%2F76cfdba6-414c-4cae-9fd8-2f0bedd014ab.png?OSSAccessKeyId=LTAI5tAGoBnm5eYsnZ5E1zMr&Expires=4935905941&Signature=KXlHdonXT6ktAlqw5x5wLHLy9uk%3D",
		ExpiresAt: time.Unix(4935905941, 0),
		Width:     1000,
		Height:    1000,
		Usage:     1,
		RequestID: "21410ce717192339411452275ea831",
		TraceID:   "21410ce717192339411452275ea831",
	}, res)
}

func TestDecodeErrors(t *testing.T) {
	business := func(code int, msg string) string {
		b, _ := json.Marshal(map[string]any{
			"success": false, "resCode": code, "resMessage": msg, "requestId": "rid",
			"code": "0", "request_id": "gw", "_trace_id_": "trace",
		})
		return string(b)
	}
	tests := []struct {
		name      string
		status    int
		header    http.Header
		body      string
		class     Class
		code      string
		errTarget any
	}{
		{"500 system error", 200, nil, business(500, "system error"), ClassRetryable, "500", new(*APIError)},
		{"501 rate limit", 200, nil, business(501, "rate limit exceed"), ClassRateLimited, "501", new(*APIError)},
		{"700 invalid input", 200, nil, business(700, "invalid input: targetWidth"), ClassPermanent, "700", new(*APIError)},
		{"801 model failed", 200, nil, business(801, "model failed"), ClassRetryable, "801", new(*APIError)},
		{"900 internal url error", 200, nil, business(900, "internal url error"), ClassRetryable, "900", new(*APIError)},
		{"1000 sensitive", 200, nil, business(1000, "content has sensitive data, please try other input"), ClassPermanent, "1000", new(*APIError)},
		{"1001 content control", 200, nil, business(1001, "content control failed, please retry"), ClassRetryable, "1001", new(*APIError)},
		{"1002 risk filter", 200, nil, business(1002, "content risk filter failed, please contact us"), ClassPermanent, "1002", new(*APIError)},
		{"unknown code is transient", 200, nil, business(1234, "new"), ClassRetryable, "1234", new(*APIError)},
		{"success false with 200", 200, nil, `{"success":false,"resCode":200}`, ClassRetryable, "500", new(*APIError)},
		{"resCode as string", 200, nil, `{"success":false,"resCode":"700","resMessage":"x"}`, ClassPermanent, "700", new(*APIError)},
		{"gateway flat", 200, nil, `{"type":"ISV","code":"IncompleteSignature","message":"The request signature does not conform to platform standards","request_id":"r1"}`, ClassPermanent, "IncompleteSignature", new(*GatewayError)},
		{"gateway wrapped with msg", 200, nil, `{"error_response":{"type":"ISP","code":"ServiceUnavailable","msg":"busy","request_id":"r2"}}`, ClassRetryable, "ServiceUnavailable", new(*GatewayError)},
		{"gateway call limit", 200, nil, `{"type":"ISV","code":"ApiCallLimit","message":"limit"}`, ClassRateLimited, "ApiCallLimit", new(*GatewayError)},
		{"gateway numeric code", 200, nil, `{"code":15,"type":"SYSTEM","message":"x"}`, ClassRetryable, "15", new(*GatewayError)},
		{"http 429", 429, http.Header{"Retry-After": {"3"}}, `{"code":"ApiCallLimit"}`, ClassRateLimited, "http_429", new(*TransportError)},
		{"http 503 html", 503, nil, `<html>bad gateway</html>`, ClassRetryable, "http_503", new(*TransportError)},
		{"http 403", 403, nil, `{}`, ClassPermanent, "http_403", new(*TransportError)},
		{"not json", 200, nil, `<html>`, ClassRetryable, "http_200", new(*TransportError)},
		{"json without envelope", 200, nil, `{"hello":1}`, ClassRetryable, "http_200", new(*TransportError)},
		{"success without url", 200, nil, `{"success":true,"resCode":200,"data":{}}`, ClassRetryable, "http_200", new(*TransportError)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeResponse(tt.status, tt.header, []byte(tt.body))
			require.Error(t, err)
			assert.Equal(t, tt.class, ClassOf(err))
			assert.Equal(t, tt.code, CodeOf(err))
			assert.True(t, errors.As(err, tt.errTarget), "error type %T", err)
		})
	}
}

func TestDecodeKeepsBusinessFields(t *testing.T) {
	_, err := DecodeResponse(200, nil, []byte(`{"success":false,"resCode":700,"resMessage":"targetWidth is invalid","requestId":"abc","_trace_id_":"t1","code":"0"}`))
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, &APIError{ResCode: 700, Message: "targetWidth is invalid", RequestID: "abc", TraceID: "t1"}, apiErr)
}

func TestRetryAfter(t *testing.T) {
	_, err := DecodeResponse(429, http.Header{"Retry-After": {"7"}}, nil)
	d, ok := RetryAfterOf(err)
	require.True(t, ok)
	assert.Equal(t, 7*time.Second, d)
	assert.True(t, IsRateLimited(err))
}

func TestURLExpiry(t *testing.T) {
	exp, ok := URLExpiry("https://h/x.png?OSSAccessKeyId=a&Expires=1700000000&Signature=s")
	require.True(t, ok)
	assert.Equal(t, int64(1700000000), exp.Unix())
	_, ok = URLExpiry("https://h/x.png")
	assert.False(t, ok)
	_, ok = URLExpiry("https://h/x.png?Expires=soon")
	assert.False(t, ok)
}

func FuzzDecodeResponse(f *testing.F) {
	sample, err := os.ReadFile("testdata/sample_response.json")
	require.NoError(f, err)
	f.Add(200, sample)
	f.Add(200, []byte(`{"error_response":{"code":"X","msg":"m"}}`))
	f.Add(429, []byte(`{"code":1}`))
	f.Add(200, []byte(`{"success":true,"resCode":"200","data":{"imageUrl":"x","width":"1e3"}}`))
	f.Add(500, []byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		res, err := DecodeResponse(status, http.Header{"Retry-After": {"1"}}, body)
		if err == nil {
			// A success always carries a URL and comes from a 2xx answer.
			if res.ImageURL == "" || status < 200 || status > 299 {
				t.Fatalf("success without URL or with status %d: %+v", status, res)
			}
			return
		}
		if c := ClassOf(err); c == ClassNone || c == ClassUnknown {
			t.Fatalf("unclassified error %T: %v", err, err)
		}
	})
}

// The URL's lifetime comes from the vendor's clock (its Date header), so a
// worker whose clock is off still knows how long the URL lives.
func TestLifetimeFromTheVendorsClock(t *testing.T) {
	vendorNow := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	exp := vendorNow.Add(5 * time.Minute)
	body := fmt.Sprintf(`{"success":true,"resCode":200,"requestId":"r","data":{"imageUrl":"https://oss.example.com/x.png?Expires=%d&Signature=s","width":800,"height":800,"usage":1}}`, exp.Unix())
	h := http.Header{"Date": []string{vendorNow.Format(http.TimeFormat)}}
	res, err := DecodeResponse(200, h, []byte(body))
	require.NoError(t, err)
	assert.Equal(t, exp, res.ExpiresAt.UTC())
	assert.Equal(t, 5*time.Minute, res.Lifetime)
	res, err = DecodeResponse(200, nil, []byte(body))
	require.NoError(t, err)
	assert.Zero(t, res.Lifetime, "no Date: no lifetime")
}
