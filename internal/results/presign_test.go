package results_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/results"
	"github.com/cropq/cropq/internal/testenv"
)

// A presigned link reads the object from a private bucket; the same URL
// unsigned is refused, and a download link names the file.
func TestPresignedGet(t *testing.T) {
	m := testenv.MinIO(t)
	client, bucket := testenv.MinIOBucket(t, m)
	ctx := context.Background()
	body := []byte("a stored crop")
	_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("crops/a b.png"), Body: bytes.NewReader(body)})
	require.NoError(t, err)

	p := results.NewPresigner(client, time.Minute)
	link, err := p.GetURL(ctx, bucket, "crops/a b.png", "")
	require.NoError(t, err)
	get := func(u string) (int, []byte, http.Header) {
		resp, err := http.Get(u)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, b, resp.Header
	}
	code, got, _ := get(link)
	require.Equal(t, http.StatusOK, code, string(got))
	assert.Equal(t, body, got)
	assert.Contains(t, link, "X-Amz-Expires=60")

	u, err := url.Parse(link)
	require.NoError(t, err)
	u.RawQuery = ""
	code, _, _ = get(u.String())
	assert.Equal(t, http.StatusForbidden, code, "the bucket is not public")

	link, err = p.GetURL(ctx, bucket, "crops/a b.png", "a b.png")
	require.NoError(t, err)
	code, _, h := get(link)
	require.Equal(t, http.StatusOK, code)
	assert.True(t, strings.HasPrefix(h.Get("Content-Disposition"), "attachment"), h.Get("Content-Disposition"))
}
