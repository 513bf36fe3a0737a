package localsvc

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// A server whose port is held by another must not be taken for ready
// because the other one answers: CI once ran tests against a MinIO that was
// not theirs (or not yet initialised) for this reason.
func TestServerOnTakenPortIsNotReady(t *testing.T) {
	// Only the fast tier (-short) skips; without it (make test, CI) a
	// missing server fails below with the command that installs it.
	if testing.Short() {
		t.Skip("needs redis-server and MinIO: skipped with -short")
	}
	ctx := context.Background()

	t.Run("redis", func(t *testing.T) {
		first, err := StartRedis(ctx, RedisOptions{Dir: t.TempDir()})
		require.NoError(t, err)
		t.Cleanup(func() { _ = first.Stop(ctx) })
		second, err := StartRedis(ctx, RedisOptions{Dir: t.TempDir(), Port: first.port})
		if second != nil {
			_ = second.Stop(ctx)
		}
		_, exited := errors.AsType[*ExitedError](err)
		require.True(t, exited, "second redis-server on a taken port: err = %v, want *ExitedError", err)
	})

	t.Run("minio", func(t *testing.T) {
		first, err := StartMinIO(ctx, MinIOOptions{Dir: t.TempDir()})
		require.NoError(t, err)
		t.Cleanup(func() { _ = first.Stop(ctx) })
		second, err := StartMinIO(ctx, MinIOOptions{Dir: t.TempDir(), Port: first.port})
		if second != nil {
			_ = second.Stop(ctx)
		}
		_, exited := errors.AsType[*ExitedError](err)
		require.True(t, exited, "second minio on a taken port: err = %v, want *ExitedError", err)
	})
}

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
