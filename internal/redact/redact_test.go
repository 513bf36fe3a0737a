package redact

import (
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://oss.example.com/r.png?Expires=1&Signature=abc", "https://oss.example.com/r.png"},
		{"https://user:pw@hooks.example.com/cb?token=s#frag", "https://hooks.example.com/cb"},
		{"redis://:secret@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis-sentinel://:pw@s1:26379,s2:26379/0?master=cropq", "redis-sentinel://s1:26379,s2:26379/0"},
		{"redis-cluster://:p@ss@n1:6379,n2:6379", "redis-cluster://n1:6379,n2:6379"},
		{"http://[::1", "http://[::1"},
		{"", ""},
	} {
		assert.Equal(t, tc.want, URL(tc.in), tc.in)
	}
}

func TestError(t *testing.T) {
	// As net/http returns it, redacted before it is wrapped (a wrapped
	// message is already a string).
	got := fmt.Errorf("send: %w", Error(&url.Error{Op: "Get", URL: "https://api.example.com/rest/x?app_key=k&sign=s", Err: errors.New("timeout")}))
	var ue *url.Error
	assert.True(t, errors.As(got, &ue))
	assert.Equal(t, "https://api.example.com/rest/x", ue.URL)
	assert.NotContains(t, got.Error(), "sign=")
	assert.Contains(t, got.Error(), "send: ", "the wrapping stays")
	plain := errors.New("no url here")
	assert.Equal(t, plain, Error(plain))
}
