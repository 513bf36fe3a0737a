package results

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Presigner makes short-lived GET links to stored objects, so that a
// browser can show a result without the bucket being public. Signing is
// local: no request goes to S3.
type Presigner struct {
	client *s3.PresignClient
	ttl    time.Duration
}

// NewPresigner signs with client's credentials; links live ttl (default 15
// minutes).
func NewPresigner(client *s3.Client, ttl time.Duration) *Presigner {
	if ttl <= 0 {
		ttl = 15 * time.Minute
	}
	return &Presigner{client: s3.NewPresignClient(client), ttl: ttl}
}

// GetURL is a link to bucket/key valid for the presigner's lifetime; a
// non-empty filename makes the browser download it under that name.
func (p *Presigner) GetURL(ctx context.Context, bucket, key, filename string) (string, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if filename != "" {
		in.ResponseContentDisposition = aws.String(fmt.Sprintf("attachment; filename=%q", filename))
	}
	req, err := p.client.PresignGetObject(ctx, in, s3.WithPresignExpires(p.ttl))
	if err != nil {
		return "", fmt.Errorf("storage: presign s3://%s/%s: %w", bucket, key, err)
	}
	return req.URL, nil
}
