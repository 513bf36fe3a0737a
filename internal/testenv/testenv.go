// Package testenv starts the real servers tests need — redis-server and
// MinIO — on free ports in temporary directories, stopped by t.Cleanup.
// A missing binary fails the test with the command that installs it; it
// never skips, except under -short (go test -short, make test-unit), which
// runs the fast tier alone: every test that needs a server is skipped.
package testenv

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cropq/cropq/internal/localstack"
	"github.com/cropq/cropq/internal/localsvc"
)

// Needs skips the test under -short, and only then: the fast tier runs no
// servers, processes or builds. Without -short (make test, CI) a missing
// server fails the test with the command that installs it (see fail). It
// is the one place a test skips: tests that need what the fast tier leaves
// out (a build, an end-to-end stack) call it too.
func Needs(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s: skipped with -short", what)
	}
}

// fail stops the test; a *localsvc.NotInstalledError's message says how to
// install the missing server.
func fail(t testing.TB, what string, err error) {
	t.Helper()
	t.Fatalf("%s: %v", what, err)
}

// Redis starts a redis-server with AOF on, for the test's lifetime.
func Redis(t testing.TB) *localsvc.Redis {
	t.Helper()
	Needs(t, "redis-server")
	r, err := localsvc.StartRedis(context.Background(), localsvc.RedisOptions{Dir: t.TempDir(), AppendOnly: true})
	if err != nil {
		fail(t, "start redis-server", err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	return r
}

// RedisCluster starts a 3-node Redis Cluster (primaries only) for the
// test's lifetime.
func RedisCluster(t testing.TB) *localsvc.RedisCluster {
	t.Helper()
	Needs(t, "a Redis Cluster (redis-server)")
	c, err := localsvc.StartRedisCluster(context.Background(), t.TempDir(), 3)
	if err != nil {
		fail(t, "start redis cluster", err)
	}
	t.Cleanup(func() { c.Stop(context.Background()) })
	return c
}

// MinIO starts a MinIO server for the test's lifetime.
func MinIO(t testing.TB) *localsvc.MinIO {
	t.Helper()
	Needs(t, "MinIO")
	m, err := localsvc.StartMinIO(context.Background(), localsvc.MinIOOptions{Dir: t.TempDir()})
	if err != nil {
		fail(t, "start minio", err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	return m
}

// S3Client returns a path-style S3 client of m.
func S3Client(m *localsvc.MinIO) *s3.Client {
	return s3.New(m.S3Options())
}

// MinIOBucket creates a fresh bucket on m and returns a client and its name.
func MinIOBucket(t testing.TB, m *localsvc.MinIO) (*s3.Client, string) {
	t.Helper()
	client := S3Client(m)
	name := fmt.Sprintf("test-%s-%x", sanitize(t.Name()), time.Now().UnixNano())
	if len(name) > 63 {
		name = name[len(name)-63:]
		name = "t" + strings.TrimLeft(name[1:], "-.")
	}
	if err := localstack.CreateBucket(context.Background(), client, name); err != nil {
		t.Fatal(err)
	}
	return client, name
}

// Start starts a process for the test's lifetime: stopped (SIGTERM, then
// waited for, killed after localstack.StopTimeout) at cleanup.
func Start(t testing.TB, c localstack.Command) *localstack.Process {
	t.Helper()
	p, err := localstack.Start(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), localstack.StopTimeout)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// RedisReplica starts a redis-server replicating primary, for the test's
// lifetime.
func RedisReplica(t testing.TB, primary *localsvc.Redis) *localsvc.Redis {
	t.Helper()
	Needs(t, "redis-server")
	r, err := localsvc.StartRedis(context.Background(), localsvc.RedisOptions{Dir: t.TempDir(), ReplicaOf: primary.Addr()})
	if err != nil {
		fail(t, "start redis-server replica", err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	return r
}

// RedisSentinel starts a Redis Sentinel monitoring primary under the name
// master, for the test's lifetime.
func RedisSentinel(t testing.TB, master string, primary *localsvc.Redis) *localsvc.RedisSentinel {
	t.Helper()
	Needs(t, "Redis Sentinel (redis-server)")
	s, err := localsvc.StartRedisSentinel(context.Background(), localsvc.SentinelOptions{Dir: t.TempDir(), Master: master, MasterAddr: primary.Addr()})
	if err != nil {
		fail(t, "start redis sentinel", err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}
