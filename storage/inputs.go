package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// DefaultInputsPrefix is where claim-checked images go in their bucket.
const DefaultInputsPrefix = "inputs/"

// InputsConfig configures Inputs.
type InputsConfig struct {
	Bucket  string        // required
	Prefix  string        // default "inputs/"
	Timeout time.Duration // one put, get or delete (default 1m)
}

// Inputs holds claim-checked source images: a producer puts a large image
// here and the task carries only its reference, because asynq keeps task
// payloads in Redis memory.
type Inputs struct {
	s3  *s3.Client
	cfg InputsConfig
}

// Input is a stored image's reference.
type Input struct {
	Bucket, Key string
	Size        int64
	SHA256      string // hex
}

// InputError is a claim-checked image that could not be stored, or a stored
// one that is missing or not what was stored.
type InputError struct {
	Bucket, Key string
	Err         error
}

func (e *InputError) Error() string {
	return fmt.Sprintf("storage: input s3://%s/%s: %v", e.Bucket, e.Key, e.Err)
}
func (e *InputError) Unwrap() error { return e.Err }

// NewInputs returns the input store.
func NewInputs(client *s3.Client, cfg InputsConfig) (*Inputs, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("storage: inputs bucket is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultInputsPrefix
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	return &Inputs{s3: client, cfg: cfg}, nil
}

// Put stores data for requestID. The key carries the request id (already
// validated as safe for keys) and a digest prefix, so two different images
// sent under one id never overwrite each other.
func (in *Inputs) Put(ctx context.Context, requestID string, data []byte) (Input, error) {
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	ref := Input{Bucket: in.cfg.Bucket, Key: in.cfg.Prefix + requestID + "/" + digest[:16], Size: int64(len(data)), SHA256: digest}
	ctx, cancel := context.WithTimeout(ctx, in.cfg.Timeout)
	defer cancel()
	_, err := in.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(ref.Key),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(ref.Size), ContentType: aws.String("application/octet-stream")})
	if err != nil {
		return Input{}, &InputError{Bucket: ref.Bucket, Key: ref.Key, Err: fmt.Errorf("put: %w", err)}
	}
	return ref, nil
}

// Get reads a stored input back and checks its size and digest.
func (in *Inputs) Get(ctx context.Context, ref Input) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.Timeout)
	defer cancel()
	obj, err := in.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(ref.Key)})
	if err != nil {
		return nil, &InputError{Bucket: ref.Bucket, Key: ref.Key, Err: err}
	}
	defer obj.Body.Close()
	data, err := io.ReadAll(io.LimitReader(obj.Body, ref.Size+1))
	if err != nil {
		return nil, &InputError{Bucket: ref.Bucket, Key: ref.Key, Err: err}
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != ref.Size || hex.EncodeToString(sum[:]) != ref.SHA256 {
		return nil, &InputError{Bucket: ref.Bucket, Key: ref.Key, Err: fmt.Errorf("stored image changed: %d bytes, want %d with the recorded digest", len(data), ref.Size)}
	}
	return data, nil
}

// Delete removes a stored input (deleting a missing one is not an error).
func (in *Inputs) Delete(ctx context.Context, ref Input) error {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.Timeout)
	defer cancel()
	if _, err := in.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(ref.Key)}); err != nil {
		return &InputError{Bucket: ref.Bucket, Key: ref.Key, Err: err}
	}
	return nil
}

// CheckBucket reports whether the inputs bucket is reachable (readiness).
func (in *Inputs) CheckBucket(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.Timeout)
	defer cancel()
	if _, err := in.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(in.cfg.Bucket)}); err != nil {
		return &InputError{Bucket: in.cfg.Bucket, Err: err}
	}
	return nil
}
