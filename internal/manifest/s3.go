package manifest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cropq/cropq/producer"
)

// ErrChanged is a manifest whose object is not the version registered
// (its ETag changed); ErrGone one whose object was removed.
var (
	ErrChanged = errors.New("the manifest object changed since it was registered")
	ErrGone    = errors.New("the manifest object is gone")
)

// S3 reads manifests from S3 (producer.ManifestObjects and Objects).
type S3 struct {
	Client *s3.Client
	// Timeout bounds one call (default 30s).
	Timeout time.Duration
}

func (o S3) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 30 * time.Second
}

// Head returns the object's ETag and size; a missing object wraps
// producer.ErrNoObject.
func (o S3) Head(ctx context.Context, bucket, key string) (producer.ObjectInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	out, err := o.Client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	var re *awshttp.ResponseError
	switch {
	case errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound:
		return producer.ObjectInfo{}, fmt.Errorf("s3://%s/%s: %w", bucket, key, producer.ErrNoObject)
	case err != nil:
		return producer.ObjectInfo{}, fmt.Errorf("head s3://%s/%s: %w", bucket, key, err)
	}
	return producer.ObjectInfo{ETag: aws.ToString(out.ETag), Size: aws.ToInt64(out.ContentLength)}, nil
}

// GetRange reads n bytes of the object from off, provided its ETag is
// still etag: ErrChanged or ErrGone otherwise.
func (o S3) GetRange(ctx context.Context, bucket, key, etag string, off, n int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	out, err := o.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), IfMatch: aws.String(etag),
		Range: aws.String("bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+n-1, 10))},
		// A range has no checksum to validate: no log line per chunk.
		func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
	var re *awshttp.ResponseError
	switch {
	case errors.As(err, &re) && re.HTTPStatusCode() == http.StatusPreconditionFailed:
		return nil, ErrChanged
	case errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound:
		return nil, ErrGone
	case err != nil:
		return nil, fmt.Errorf("read s3://%s/%s at %d: %w", bucket, key, off, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("read s3://%s/%s at %d: %w", bucket, key, off, err)
	}
	return b, nil
}
