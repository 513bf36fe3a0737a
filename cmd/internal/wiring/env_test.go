package wiring

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The configuration page's table is the code's, `cropq env --markdown`,
// and it names no variable but those.
func TestConfigurationPageListsExactlyTheVariables(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "configuration.md"))
	require.NoError(t, err)
	assert.True(t, strings.Contains(string(page), EnvMarkdown()), "docs/configuration.md's table is out of date: regenerate it with: go run ./cmd/cropq env --markdown")
	row := regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]+)`")
	var listed, want []string
	for _, m := range row.FindAllStringSubmatch(string(page), -1) {
		listed = append(listed, m[1])
	}
	for _, v := range EnvVars() {
		want = append(want, v.Name)
	}
	assert.ElementsMatch(t, want, listed, "docs/configuration.md lists each variable of `cropq env` once, and no other")
}

func TestEnvRefusesUndocumentedNames(t *testing.T) {
	assert.Panics(t, func() { MapEnv(nil).Get("CROPQ_NOT_DOCUMENTED") })
	assert.Equal(t, "crops", MapEnv(nil).Get("CROPQ_QUEUE"))
	assert.Equal(t, "x", MapEnv(map[string]string{"CROPQ_QUEUE": "x"}).Get("CROPQ_QUEUE"))
}

func TestEnvTypedValuesNameTheVariable(t *testing.T) {
	env := MapEnv(map[string]string{"CROPQ_CONCURRENCY": "ten", "CROPQ_TASK_TIMEOUT": "-1s", "CROPQ_API_TRIAL": "yes"})
	_, err := env.Int("CROPQ_CONCURRENCY")
	assert.ErrorContains(t, err, `CROPQ_CONCURRENCY="ten": want an integer`)
	_, err = env.Duration("CROPQ_TASK_TIMEOUT")
	assert.ErrorContains(t, err, "CROPQ_TASK_TIMEOUT")
	_, err = env.Bool("CROPQ_API_TRIAL")
	assert.ErrorContains(t, err, "CROPQ_API_TRIAL")
}

func TestRedisURLForms(t *testing.T) {
	tests := []struct {
		url     string
		wantErr string
		check   func(t *testing.T, c any)
	}{
		{url: "redis://:pw@127.0.0.1:6390/2", check: func(t *testing.T, c any) {
			opt := c.(*redis.Client).Options()
			assert.Equal(t, "127.0.0.1:6390", opt.Addr)
			assert.Equal(t, 2, opt.DB)
			assert.Nil(t, opt.TLSConfig)
		}},
		{url: "rediss://cache.example.com:6380/0", check: func(t *testing.T, c any) {
			assert.NotNil(t, c.(*redis.Client).Options().TLSConfig, "rediss means TLS")
		}},
		{url: "redis-sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/1?master=cropq", check: func(t *testing.T, c any) {
			_, ok := c.(*redis.Client) // a failover client is a *redis.Client that asks the sentinels
			assert.True(t, ok)
		}},
		{url: "redis-sentinel://10.0.0.1:26379/0", wantErr: "master=NAME"},
		{url: "redis-cluster://:pw@10.0.0.1:7000,10.0.0.2:7000", check: func(t *testing.T, c any) {
			assert.Equal(t, []string{"10.0.0.1:7000", "10.0.0.2:7000"}, c.(*redis.ClusterClient).Options().Addrs)
		}},
		{url: "redis-cluster://", wantErr: "redis-cluster://"},
		{url: "http://localhost:6379", wantErr: "CROPQ_REDIS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			c, err := newRedisClient(tt.url)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.NotContains(t, err.Error(), "pw@", "no password in errors")
				return
			}
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
			tt.check(t, c)
		})
	}
}

func TestAsynqConnOptForms(t *testing.T) {
	opt, err := AsynqConnOpt("redis-cluster://:pw@10.0.0.1:7000,10.0.0.2:7000?tls=true")
	require.NoError(t, err)
	cl, ok := opt.(asynq.RedisClusterClientOpt)
	require.True(t, ok)
	assert.Len(t, cl.Addrs, 2)
	assert.NotNil(t, cl.TLSConfig)
	opt, err = AsynqConnOpt("redis-sentinel://:pw@10.0.0.1:26379/1?master=cropq")
	require.NoError(t, err)
	_, ok = opt.(asynq.RedisFailoverClientOpt)
	assert.True(t, ok)
}

func TestSecretsFromFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app-secret")
	require.NoError(t, os.WriteFile(path, []byte("from-a-file\n"), 0o600))
	env := MapEnv(map[string]string{"CROPQ_APP_SECRET_FILE": path, "CROPQ_API_TOKENS": "t1,t2"})
	cfg, err := LoadConfig(env)
	require.NoError(t, err)
	assert.Equal(t, "from-a-file", cfg.API.AppSecret, "the file wins, without its newline")
	assert.Equal(t, []string{"t1", "t2"}, cfg.HTTP.Tokens)

	_, err = LoadConfig(MapEnv(map[string]string{"CROPQ_WEBHOOK_SECRET_FILE": "/nonexistent/secret"}))
	assert.ErrorContains(t, err, "CROPQ_WEBHOOK_SECRET_FILE")
}
