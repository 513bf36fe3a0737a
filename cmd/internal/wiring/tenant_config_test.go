package wiring

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/httpapi"
)

func TestTenantWeightsConfig(t *testing.T) {
	base := map[string]string{"CROPQ_REDIS_URL": "redis://127.0.0.1:1/0"}
	load := func(weights string) (Config, error) {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		env["CROPQ_TENANT_WEIGHTS"] = weights
		return LoadConfig(MapEnv(env))
	}

	c, err := load("")
	require.NoError(t, err)
	assert.Nil(t, c.TenantWeights, "unset: every tenant weighs 1")

	c, err = load("acme=3,globex=1")
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"acme": 3, "globex": 1}, c.TenantWeights)

	c, err = load(" acme = 3 , default=1000,a.b_c-d=2,")
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"acme": 3, "default": 1000, "a.b_c-d": 2}, c.TenantWeights)

	for weights, want := range map[string]string{
		"acme":                            "tenant=weight",
		"acme=0":                          "from 1 to 1000",
		"acme=-1":                         "from 1 to 1000",
		"acme=1001":                       "from 1 to 1000",
		"acme=1.5":                        "from 1 to 1000",
		"acme=x":                          "from 1 to 1000",
		"acme=":                           "from 1 to 1000",
		"ACME=1":                          "a-z 0-9",
		"=1":                              "a-z 0-9",
		strings.Repeat("t", 65) + "=1":    "a-z 0-9",
		"acme=1,acme=2":                   "each tenant once",
		"acme:3":                          "tenant=weight",
		"acme=3;globex=1":                 "from 1 to 1000",
		"acme=3,globex=1,bad tenant=2":    "a-z 0-9",
		"acme=3,globex=1,initech=1000000": "from 1 to 1000",
	} {
		_, err := load(weights)
		if assert.Error(t, err, weights) {
			assert.Contains(t, err.Error(), "CROPQ_TENANT_WEIGHTS", weights)
			assert.Contains(t, err.Error(), want, weights)
		}
	}
}

// CROPQ_API_TOKENS entries reach the API as given; they are read there
// (httpapi.ParseTokens), so a bad entry stops `cropq api`, naming the
// variable and the entry's position.
func TestTenantTokensConfig(t *testing.T) {
	c, err := LoadConfig(MapEnv(map[string]string{"CROPQ_API_TOKENS": "acme:tok-a, globex:tok-g ,tok-d"}))
	require.NoError(t, err)
	assert.Equal(t, []string{"acme:tok-a", "globex:tok-g", "tok-d"}, c.HTTP.Tokens)

	_, err = httpapi.New(nil, c.HTTP)
	err = EnvContext(err)
	assert.ErrorContains(t, err, "CROPQ_API_TOKENS: httpapi: Config.Tokens: entry 1: token must be at least")
	assert.NotContains(t, err.Error(), "tok-a")
}

func TestUrgentShareConfig(t *testing.T) {
	load := func(v string) (Config, error) {
		return LoadConfig(MapEnv(map[string]string{"CROPQ_REDIS_URL": "redis://127.0.0.1:1/0", "CROPQ_URGENT_SHARE": v}))
	}
	for v, want := range map[string]float64{"": 0.25, "0.5": 0.5, " 0.1 ": 0.1, "1": 1} {
		c, err := load(v)
		require.NoError(t, err, v)
		assert.Equal(t, want, c.UrgentShare, v)
	}
	for _, v := range []string{"0", "-0.25", "1.01", "25%", "x", "NaN", "Inf"} {
		_, err := load(v)
		if assert.Error(t, err, v) {
			assert.Contains(t, err.Error(), "CROPQ_URGENT_SHARE", v)
			assert.Contains(t, err.Error(), "(0, 1]", v)
		}
	}
}
