package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's configuration table is the code's: `cropq env --markdown`.
func TestREADMEListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	assert.Contains(t, string(readme), envMarkdown(), "regenerate the table with: go run ./cmd/cropq env --markdown")
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
