package wiring

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/dedup"
)

func TestDedupSourceSetting(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		want dedup.SourceMode
		err  []string // what a refusal names
	}{
		{"default", nil, dedup.SourceValidators, nil},
		{"bytes", map[string]string{"CROPQ_DEDUP_SOURCE": "bytes"}, dedup.SourceBytes, nil},
		{"url", map[string]string{"CROPQ_DEDUP_SOURCE": "url"}, dedup.SourceURL, nil},
		{"the fetch alias", map[string]string{"CROPQ_DEDUP_FETCH": "true"}, dedup.SourceBytes, nil},
		{"the alias and bytes agree", map[string]string{"CROPQ_DEDUP_FETCH": "true", "CROPQ_DEDUP_SOURCE": "bytes"}, dedup.SourceBytes, nil},
		{"the alias off leaves the source", map[string]string{"CROPQ_DEDUP_FETCH": "false", "CROPQ_DEDUP_SOURCE": "url"}, dedup.SourceURL, nil},
		{"conflicting", map[string]string{"CROPQ_DEDUP_FETCH": "true", "CROPQ_DEDUP_SOURCE": "url"}, "", []string{"CROPQ_DEDUP_FETCH", "CROPQ_DEDUP_SOURCE=url"}},
		{"conflicting with the default spelled out", map[string]string{"CROPQ_DEDUP_FETCH": "true", "CROPQ_DEDUP_SOURCE": "validators"}, "",
			[]string{"CROPQ_DEDUP_FETCH", "CROPQ_DEDUP_SOURCE=validators"}},
		{"unknown", map[string]string{"CROPQ_DEDUP_SOURCE": "etag"}, "", []string{"CROPQ_DEDUP_SOURCE", "validators, bytes or url"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := LoadConfig(MapEnv(c.env))
			if c.err != nil {
				require.Error(t, err)
				for _, s := range c.err {
					assert.ErrorContains(t, err, s)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, cfg.Dedup.Mode)
		})
	}
}

func TestFreeWindowSetting(t *testing.T) {
	for in, want := range map[string]int{"": 0, "auto": 0, "off": -1, "200": 200} {
		cfg, err := LoadConfig(MapEnv(map[string]string{"CROPQ_FREE_WINDOW": in}))
		require.NoError(t, err, in)
		assert.Equal(t, want, cfg.FreeWindow, in)
	}
	for _, in := range []string{"0", "-3", "many"} {
		_, err := LoadConfig(MapEnv(map[string]string{"CROPQ_FREE_WINDOW": in}))
		assert.ErrorContains(t, err, "CROPQ_FREE_WINDOW", in)
	}
}
