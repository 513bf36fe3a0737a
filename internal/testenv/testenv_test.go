package testenv

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// redisDo sends one inline command and returns the first reply line.
func redisDo(t *testing.T, addr, cmd string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte(cmd + "\r\n"))
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	if strings.HasPrefix(line, "$") && !strings.HasPrefix(line, "$-1") {
		line, err = r.ReadString('\n')
		require.NoError(t, err)
	}
	return strings.TrimSpace(line)
}

func TestRedisRestartKeepsAOF(t *testing.T) {
	r := Redis(t)
	assert.Equal(t, "+OK", redisDo(t, r.Addr(), "SET k v1"))
	require.NoError(t, r.Stop(context.Background()))
	_, err := net.Dial("tcp", r.Addr())
	require.Error(t, err, "stopped means not listening")
	require.NoError(t, r.Start(context.Background()))
	assert.Equal(t, "v1", redisDo(t, r.Addr(), "GET k"), "the append-only file survives a restart")
}

func TestMinIOBucketAndRestart(t *testing.T) {
	m := MinIO(t)
	client, bucket := MinIOBucket(t, m)
	ctx := context.Background()
	_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("a"), Body: strings.NewReader("hello")})
	require.NoError(t, err)

	require.NoError(t, m.Stop(ctx))
	_, err = http.Get(m.Endpoint() + "/minio/health/live")
	require.Error(t, err)
	require.NoError(t, m.Start(ctx))

	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("a")})
	require.NoError(t, err)
	defer out.Body.Close()
	assert.Equal(t, int64(5), aws.ToInt64(out.ContentLength))
}
