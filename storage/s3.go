// Package storage reaches S3 (or MinIO) for a pipeline: NewS3Client from an
// S3Config, and Inputs, the claim-check store that keeps base64 images too
// large for a queued payload (a producer's Config.Inputs). The copy of
// results into S3 is the workers' and lives under internal/.
package storage

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3Config says how to reach S3.
type S3Config struct {
	Endpoint        string // "" = AWS S3; MinIO: http://host:9000
	Region          string // default us-east-1
	UsePathStyle    bool   // MinIO needs it
	AccessKeyID     string // "" = the AWS default credentials chain
	SecretAccessKey string
}

// NewS3Client builds an S3 client from c.
func NewS3Client(ctx context.Context, c S3Config) (*s3.Client, error) {
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(c.Region)}
	if c.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("storage: aws config: %w", err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.UsePathStyle
	}), nil
}
