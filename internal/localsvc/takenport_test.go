package localsvc_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/localsvc"
	"github.com/cropq/cropq/internal/testenv"
)

// A server whose port is held by another must not be taken for ready
// because the other one answers: CI once ran tests against a MinIO that was
// not theirs (or not yet initialised) for this reason. The first server
// comes from testenv, which skips under -short only and otherwise fails
// with the command that installs a missing server.
func TestServerOnTakenPortIsNotReady(t *testing.T) {
	ctx := context.Background()

	t.Run("redis", func(t *testing.T) {
		first := testenv.Redis(t)
		second, err := localsvc.StartRedis(ctx, localsvc.RedisOptions{Dir: t.TempDir(), Port: portOf(t, first.Addr())})
		if second != nil {
			_ = second.Stop(ctx)
		}
		_, exited := errors.AsType[*localsvc.ExitedError](err)
		require.True(t, exited, "second redis-server on a taken port: err = %v, want *ExitedError", err)
	})

	t.Run("minio", func(t *testing.T) {
		first := testenv.MinIO(t)
		second, err := localsvc.StartMinIO(ctx, localsvc.MinIOOptions{Dir: t.TempDir(), Port: portOf(t, first.Addr())})
		if second != nil {
			_ = second.Stop(ctx)
		}
		_, exited := errors.AsType[*localsvc.ExitedError](err)
		require.True(t, exited, "second minio on a taken port: err = %v, want *ExitedError", err)
	})
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	port, err := strconv.Atoi(p)
	require.NoError(t, err)
	return port
}
