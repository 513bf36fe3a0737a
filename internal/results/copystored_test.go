package results_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/results"
)

// CopyStored: a server-side copy of another request's result, to this
// request's own key with its own metadata; a missing or replaced source is
// a *MissingError (the worker then pays).
func TestCopyStored(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	small := encode(t, "png", 300, 200)
	from, err := e.copier.Copy(ctx, serve(t, bytesHandler("image/png", small)), results.Object{RequestID: "first", APIRequestID: "api-1", Width: 300, Height: 200})
	require.NoError(t, err)

	got, err := e.copier.CopyStored(ctx, from, results.Object{RequestID: "second", APIRequestID: "api-1", Width: 300, Height: 200,
		Metadata: map[string]string{"sku": "B-2"}})
	require.NoError(t, err)
	assert.Equal(t, "crops/second/300x200.png", got.Key)
	assert.Equal(t, from.ETag, got.ETag, "the same bytes")
	assert.Equal(t, from.Size, got.Size)
	obj, err := e.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(got.Key)})
	require.NoError(t, err)
	b, err := io.ReadAll(obj.Body)
	obj.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, small, b)
	assert.Equal(t, "image/png", aws.ToString(obj.ContentType))
	assert.Equal(t, map[string]string{"request-id": "second", "api-request-id": "api-1", "width": "300", "height": "200", "sku": "B-2"}, obj.Metadata)

	// Replaced by other content: not copied.
	other := encode(t, "png", 310, 200)
	_, err = e.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(from.Key), Body: bytes.NewReader(other)})
	require.NoError(t, err)
	_, err = e.copier.CopyStored(ctx, from, results.Object{RequestID: "third", Width: 300, Height: 200})
	var missing *results.MissingError
	require.True(t, errors.As(err, &missing), "%v", err)
	assert.Contains(t, err.Error(), "replaced")

	// Deleted: not copied.
	_, err = e.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(from.Key)})
	require.NoError(t, err)
	_, err = e.copier.CopyStored(ctx, from, results.Object{RequestID: "third", Width: 300, Height: 200})
	require.True(t, errors.As(err, &missing), "%v", err)
	assert.Contains(t, err.Error(), "deleted")
	assert.NotContains(t, e.keys(t), "crops/third/300x200.png")

	// A request's own bucket that does not exist fails as it would before paying.
	_, err = e.copier.CopyStored(ctx, got, results.Object{RequestID: "fourth", Width: 300, Height: 200, Bucket: "no-such-bucket-cropq"})
	assert.True(t, errors.As(err, new(*results.BucketError)), "%v", err)
}
