package localsvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// MinIOOptions configure StartMinIO.
type MinIOOptions struct {
	Dir       string // data and log directory (required)
	Port      int    // 0: a free port
	AccessKey string // default: random per instance
	SecretKey string // default: random per instance
	Binary    string // "": FindBinary("minio")
}

// MinIO is a running MinIO server.
type MinIO struct {
	process
	port                 int
	accessKey, secretKey string
}

// StartMinIO starts `minio server` on 127.0.0.1 and waits until it is live.
func StartMinIO(ctx context.Context, o MinIOOptions) (*MinIO, error) {
	if o.Binary == "" {
		bin, err := FindBinary("minio")
		if err != nil {
			return nil, err
		}
		o.Binary = bin
	}
	if o.AccessKey == "" {
		// Per-instance credentials: a client of another instance that
		// reused the port is refused instead of silently served.
		o.AccessKey, o.SecretKey = "cropq-"+randomHex(6), randomHex(20)
	}
	data := filepath.Join(o.Dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	if o.Port == 0 {
		return startOnFreePort(func(port int) (*MinIO, error) {
			o.Port = port
			return startMinIO(ctx, o, data)
		})
	}
	return startMinIO(ctx, o, data)
}

func startMinIO(ctx context.Context, o MinIOOptions, data string) (*MinIO, error) {
	console, err := FreePort()
	if err != nil {
		return nil, err
	}
	m := &MinIO{port: o.Port, accessKey: o.AccessKey, secretKey: o.SecretKey}
	probeOpts := m.S3Options()
	probeOpts.HTTPClient = &http.Client{Timeout: 2 * time.Second}
	probeOpts.RetryMaxAttempts = 1
	probe := s3.New(probeOpts)
	m.process = process{
		name: "minio", bin: o.Binary, logPath: filepath.Join(o.Dir, "minio.log"),
		args: []string{"server", data, "--address", m.Addr(), "--console-address", "127.0.0.1:" + portString(console), "--quiet"},
		env: []string{"MINIO_ROOT_USER=" + o.AccessKey, "MINIO_ROOT_PASSWORD=" + o.SecretKey,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1"},
		ready: func(ctx context.Context, _ int) error { return minioReady(ctx, probe) },
	}
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Addr is host:port.
func (m *MinIO) Addr() string { return "127.0.0.1:" + portString(m.port) }

// Endpoint is the S3 endpoint URL.
func (m *MinIO) Endpoint() string { return "http://" + m.Addr() }

// S3Options are the options of a path-style S3 client of this server with
// its root credentials.
func (m *MinIO) S3Options() s3.Options {
	return s3.Options{
		BaseEndpoint: aws.String(m.Endpoint()),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(m.accessKey, m.secretKey, ""),
	}
}

// AccessKey and SecretKey are the root credentials.
func (m *MinIO) AccessKey() string { return m.accessKey }
func (m *MinIO) SecretKey() string { return m.secretKey }

// minioReady reports whether this MinIO serves signed S3 requests. The
// liveness probe answers 200 as soon as the listener is up, while S3 calls
// still fail with 503 XMinioServerNotInitialized until the object layer is
// ready (seen in CI on a loaded machine). Signing with this instance's own
// credentials also makes sure the port is not answered by another test's
// server that won a race for it.
func minioReady(ctx context.Context, client *s3.Client) error {
	_, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}
