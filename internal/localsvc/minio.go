package localsvc

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// MinIOOptions configure StartMinIO.
type MinIOOptions struct {
	Dir       string // data and log directory (required)
	Port      int    // 0: a free port
	AccessKey string // default "minioadmin"
	SecretKey string // default "minioadmin"
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
		o.AccessKey, o.SecretKey = "minioadmin", "minioadmin"
	}
	data := filepath.Join(o.Dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	if o.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		o.Port = p
	}
	console, err := FreePort()
	if err != nil {
		return nil, err
	}
	m := &MinIO{port: o.Port, accessKey: o.AccessKey, secretKey: o.SecretKey}
	live := m.Endpoint() + "/minio/health/live"
	client := &http.Client{Timeout: 2 * time.Second}
	m.process = process{
		name: "minio", bin: o.Binary, logPath: filepath.Join(o.Dir, "minio.log"),
		args: []string{"server", data, "--address", m.Addr(), "--console-address", "127.0.0.1:" + portString(console), "--quiet"},
		env: []string{"MINIO_ROOT_USER=" + o.AccessKey, "MINIO_ROOT_PASSWORD=" + o.SecretKey,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1"},
		ready: func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, live, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("minio: health %d", resp.StatusCode)
			}
			return nil
		},
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

// AccessKey and SecretKey are the root credentials.
func (m *MinIO) AccessKey() string { return m.accessKey }
func (m *MinIO) SecretKey() string { return m.secretKey }
