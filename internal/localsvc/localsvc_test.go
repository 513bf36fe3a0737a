package localsvc

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStartOnFreePortRetriesOnlyExits(t *testing.T) {
	calls := 0
	_, err := startOnFreePort(func(int) (int, error) {
		calls++
		return 0, &ExitedError{Name: "x"}
	})
	require.Error(t, err)
	require.Equal(t, 3, calls, "attempts after exits")
	calls = 0
	other := errors.New("boom")
	_, err = startOnFreePort(func(int) (int, error) { calls++; return 0, other })
	require.ErrorIs(t, err, other)
	require.Equal(t, 1, calls, "attempts after another error")
}
