package manifest_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/requestfile"
	"github.com/cropq/cropq/tasks"
)

func mustRequest(t *testing.T, line string) tasks.Request {
	t.Helper()
	req, err := requestfile.ParseJSON([]byte(line))
	require.NoError(t, err)
	return req
}

func assertField(t *testing.T, err error, field string) {
	t.Helper()
	var ve *cropapi.ValidationError
	if assert.True(t, errors.As(err, &ve), "want a validation error naming %s, got %v", field, err) {
		assert.Equal(t, field, ve.Field, "%v", err)
	}
}
