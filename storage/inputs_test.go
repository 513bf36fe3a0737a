package storage_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/storage"
)

func TestInputsRoundTrip(t *testing.T) {
	m := testenv.MinIO(t)
	client, bucket := testenv.MinIOBucket(t, m)
	in, err := storage.NewInputs(client, storage.InputsConfig{Bucket: bucket})
	require.NoError(t, err)
	ctx := context.Background()

	data := bytes.Repeat([]byte{1, 2, 3}, 100_000)
	ref, err := in.Put(ctx, "req-1", data)
	require.NoError(t, err)
	assert.Equal(t, bucket, ref.Bucket)
	assert.Contains(t, ref.Key, "inputs/req-1/")
	assert.Equal(t, int64(len(data)), ref.Size)

	got, err := in.Get(ctx, ref)
	require.NoError(t, err)
	assert.Equal(t, data, got)

	// Tampered with in storage: refused, never sent to the API.
	_, err = client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(ref.Key), Body: bytes.NewReader([]byte("other"))})
	require.NoError(t, err)
	_, err = in.Get(ctx, ref)
	var ie *storage.InputError
	require.ErrorAs(t, err, &ie)

	require.NoError(t, in.Delete(ctx, ref))
	_, err = in.Get(ctx, ref)
	require.ErrorAs(t, err, &ie)
	require.NoError(t, in.Delete(ctx, ref), "deleting twice is fine")
}
