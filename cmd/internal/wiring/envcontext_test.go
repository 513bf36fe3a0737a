package wiring

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/results"
)

// The libraries name their Config fields; cmd adds the variable behind
// each, and the library's own words stay.
func TestEnvContextNamesTheVariable(t *testing.T) {
	_, keyErr := cropapi.NewClient(cropapi.Config{AppSecret: "s"})
	_, secretErr := cropapi.NewClient(cropapi.Config{AppKey: "k"})
	_, bucketErr := results.New(nil, results.Config{})
	_, tokensErr := httpapi.New(nil, httpapi.Config{Tokens: []string{"a:x", "b:x"}})
	for _, tc := range []struct {
		err        error
		env, field string
	}{
		{keyErr, "CROPQ_APP_KEY", "Config.AppKey"},
		{secretErr, "CROPQ_APP_SECRET", "Config.AppSecret"},
		{bucketErr, "CROPQ_S3_BUCKET", "Config.Bucket"},
		{tokensErr, "CROPQ_API_TOKENS", "Config.Tokens"},
	} {
		require.Error(t, tc.err, tc.env)
		assert.NotContains(t, tc.err.Error(), "CROPQ_", "the library does not name the variable")
		got := EnvContext(tc.err)
		assert.Contains(t, got.Error(), tc.env+": ")
		assert.Contains(t, got.Error(), tc.field)
		assert.ErrorIs(t, got, tc.err)
	}
	other := errors.New("something else")
	assert.Equal(t, other, EnvContext(other))
}
