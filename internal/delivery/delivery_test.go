package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/webhook"
)

var (
	testSecret = []byte("test-secret-key")
	testNow    = time.Unix(1_700_000_000, 0)
	loopback   = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
)

func testEvent() webhook.Event {
	return webhook.Event{
		RequestID: "sku-123",
		BatchID:   "b-1",
		State:     webhook.StateSucceeded,
		Bucket:    "crops",
		Key:       "out/sku-123.jpg",
		At:        testNow.UTC(),
	}
}

type received struct {
	header http.Header
	body   []byte
}

// receiver starts a server answering status and reporting each request on
// the returned channel.
func receiver(t *testing.T, status int) (*httptest.Server, <-chan received, *atomic.Int64) {
	t.Helper()
	got := make(chan received, 1)
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		select {
		case got <- received{header: r.Header.Clone(), body: b}:
		default:
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, got, &hits
}

func deliverer(t *testing.T, allow []netip.Prefix, timeout time.Duration) *Deliverer {
	t.Helper()
	d, err := NewDeliverer(Config{Secret: testSecret, Allow: allow, Timeout: timeout, Now: func() time.Time { return testNow }})
	require.NoError(t, err)
	return d
}

func task(t *testing.T, url string) *asynq.Task {
	t.Helper()
	tk, _, err := NewTask(url, testEvent(), Options{})
	require.NoError(t, err)
	return tk
}

func TestDeliverSuccess(t *testing.T) {
	srv, got, hits := receiver(t, http.StatusNoContent)
	d := deliverer(t, loopback, 0)

	require.NoError(t, d.ProcessTask(context.Background(), task(t, srv.URL+"/hook?token=abc")))
	require.EqualValues(t, 1, hits.Load())
	r := <-got

	require.NoError(t, webhook.Verify(testSecret, r.header, r.body, 5*time.Minute, testNow))
	assert.Equal(t, "application/json", r.header.Get("Content-Type"))
	assert.Equal(t, DefaultUserAgent, r.header.Get("User-Agent"))
	assert.Equal(t, "1700000000", r.header.Get(webhook.HeaderTimestamp))
	assert.True(t, strings.HasPrefix(r.header.Get(webhook.HeaderSignature), "v1="))

	var ev webhook.Event
	require.NoError(t, json.Unmarshal(r.body, &ev))
	assert.Equal(t, testEvent(), ev)
	assert.NotContains(t, string(r.body), "errorCode", "empty fields are omitted")
}

func TestDeliverBlockedWithoutAllow(t *testing.T) {
	srv, _, hits := receiver(t, http.StatusOK)
	d := deliverer(t, nil, 0)

	err := d.ProcessTask(context.Background(), task(t, srv.URL+"/hook?token=s3cr3t"))
	require.Error(t, err)
	var be *BlockedError
	require.ErrorAs(t, err, &be)
	assert.True(t, be.IP.IsLoopback())
	assert.ErrorIs(t, err, asynq.SkipRetry)
	assert.NotContains(t, err.Error(), "s3cr3t")
	assert.Zero(t, hits.Load(), "a blocked receiver must not be contacted")
}

func TestDeliverStatus(t *testing.T) {
	tests := []struct {
		status    int
		permanent bool
	}{
		{http.StatusOK, false},
		{http.StatusBadRequest, true},
		{http.StatusNotFound, true},
		{http.StatusGone, true},
		{http.StatusRequestTimeout, false},
		{http.StatusTooManyRequests, false},
		{http.StatusInternalServerError, false},
		{http.StatusServiceUnavailable, false},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			srv, _, hits := receiver(t, tt.status)
			d := deliverer(t, loopback, 0)
			err := d.ProcessTask(context.Background(), task(t, srv.URL+"?token=s3cr3t"))
			assert.EqualValues(t, 1, hits.Load())
			if tt.status < 300 {
				require.NoError(t, err)
				return
			}
			var se *StatusError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.status, se.StatusCode)
			assert.Equal(t, tt.permanent, errors.Is(err, asynq.SkipRetry))
			assert.NotContains(t, err.Error(), "s3cr3t")
		})
	}
}

func TestDeliverRedirectNotFollowed(t *testing.T) {
	target, _, targetHits := receiver(t, http.StatusOK)
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	}))
	t.Cleanup(redir.Close)
	d := deliverer(t, loopback, 0)

	err := d.ProcessTask(context.Background(), task(t, redir.URL))
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusFound, se.StatusCode)
	assert.ErrorIs(t, err, asynq.SkipRetry)
	assert.Zero(t, targetHits.Load(), "redirect target must not be contacted")
}

func TestDeliverTransportErrorsRetry(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		err := deliverer(t, loopback, 0).ProcessTask(context.Background(), task(t, url+"?token=s3cr3t"))
		require.Error(t, err)
		assert.NotErrorIs(t, err, asynq.SkipRetry)
		assert.NotContains(t, err.Error(), "s3cr3t")
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		t.Cleanup(srv.Close)
		t.Cleanup(func() { close(release) }) // runs first: lets the stalled handler return
		err := deliverer(t, loopback, 50*time.Millisecond).ProcessTask(context.Background(), task(t, srv.URL+"?token=s3cr3t"))
		require.Error(t, err)
		assert.NotErrorIs(t, err, asynq.SkipRetry)
		assert.NotContains(t, err.Error(), "s3cr3t")
	})
}

func TestProcessTaskBadPayload(t *testing.T) {
	tests := []struct {
		name    string
		payload string
	}{
		{"unknown field", `{"v":1,"url":"https://example.com/h","event":{"requestId":"a","state":"failed","at":"2024-01-01T00:00:00Z"},"extra":1}`},
		{"unknown event field", `{"v":1,"url":"https://example.com/h","event":{"requestId":"a","state":"failed","nope":true}}`},
		{"bad version", `{"v":2,"url":"https://example.com/h","event":{"requestId":"a","state":"failed"}}`},
		{"not json", `{`},
		{"trailing data", `{"v":1,"url":"https://example.com/h","event":{}} {}`},
		{"bad url", `{"v":1,"url":"ftp://example.com/h","event":{"requestId":"a","state":"failed"}}`},
	}
	d := deliverer(t, nil, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.ProcessTask(context.Background(), asynq.NewTask(TypeDeliver, []byte(tt.payload)))
			require.Error(t, err)
			assert.ErrorIs(t, err, asynq.SkipRetry)
		})
	}
}

func TestNewDelivererRequiresSecret(t *testing.T) {
	_, err := NewDeliverer(Config{})
	require.Error(t, err)
}

func TestValidateURL(t *testing.T) {
	tests := []struct {
		name   string
		url    string
		reason string
	}{
		{"valid https", "https://hooks.example.com/cropq?token=x", ""},
		{"valid http with port", "http://hooks.example.com:8080/h", ""},
		{"empty", "", "required"},
		{"ftp", "ftp://example.com/h", "http or https"},
		{"relative", "/hooks/cropq", "absolute"},
		{"missing host", "https:///path", "host"},
		{"opaque", "https:example.com", "host"},
		{"user pass", "https://user:pass@example.com/h", "user:password"},
		{"too long", "https://example.com/" + strings.Repeat("a", 2048), "at most 2048 bytes"},
		{"control char", "https://example.com/\x7f", "valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateURL(tt.url)
			if tt.reason == "" {
				require.NoError(t, err)
				return
			}
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, "callbackUrl", fe.Field)
			assert.Contains(t, fe.Reason, tt.reason)
			assert.Equal(t, fe.Field+" "+fe.Reason, fe.Error())
		})
	}
}

func TestNewTask(t *testing.T) {
	ev := testEvent()
	tk, opts, err := NewTask("https://hooks.example.com/h?token=x", ev, Options{})
	require.NoError(t, err)
	assert.Equal(t, TypeDeliver, tk.Type())

	p, err := decodePayload(tk.Payload())
	require.NoError(t, err)
	assert.Equal(t, Payload{Version: PayloadVersion, URL: "https://hooks.example.com/h?token=x", Event: ev}, p)

	require.NotEmpty(t, opts)
	got := map[asynq.OptionType]any{}
	for _, o := range opts {
		got[o.Type()] = o.Value()
	}
	assert.Equal(t, "webhook:sku-123:succeeded", got[asynq.TaskIDOpt])
	assert.Equal(t, DefaultQueue, got[asynq.QueueOpt])
	assert.Equal(t, DefaultMaxRetry, got[asynq.MaxRetryOpt])
	assert.Equal(t, DefaultTaskTimeout, got[asynq.TimeoutOpt])
	assert.Equal(t, DefaultRetention, got[asynq.RetentionOpt])

	_, opts, err = NewTask("https://hooks.example.com/h", ev, Options{Queue: "q", MaxRetry: 3})
	require.NoError(t, err)
	got = map[asynq.OptionType]any{}
	for _, o := range opts {
		got[o.Type()] = o.Value()
	}
	assert.Equal(t, "q", got[asynq.QueueOpt])
	assert.Equal(t, 3, got[asynq.MaxRetryOpt])
}

func TestNewTaskRefusesInvalid(t *testing.T) {
	tests := []struct {
		name  string
		url   string
		ev    func(*webhook.Event)
		field string
	}{
		{"bad url", "ftp://example.com", func(*webhook.Event) {}, "callbackUrl"},
		{"no request id", "https://example.com", func(e *webhook.Event) { e.RequestID = "" }, "requestId"},
		{"bad state", "https://example.com", func(e *webhook.Event) { e.State = "running" }, "state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := testEvent()
			tt.ev(&ev)
			tk, opts, err := NewTask(tt.url, ev, Options{})
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tt.field, fe.Field)
			assert.Nil(t, tk)
			assert.Nil(t, opts)
		})
	}
}
