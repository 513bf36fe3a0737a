// Package localstack composes a local cropq system from real parts: the
// servers of package localsvc, buckets, handlers served on loopback ports,
// the cropq binaries built from this checkout and cropq processes with the
// environment that points them at the stack. `cropq-dev dev`, cropq-bench
// and the end-to-end tests (through package testenv) start theirs with it.
// Like localsvc, it knows nothing of testing.
package localstack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cropq/cropq/internal/localsvc"
)

// Stack owns what was started for one local system and stops it in
// reverse order.
type Stack struct {
	dir   string
	stops []func() error
}

// New is an empty stack whose servers keep their data under dir.
func New(dir string) *Stack { return &Stack{dir: dir} }

// Dir is the directory the stack's servers keep their data in.
func (s *Stack) Dir() string { return s.dir }

// OnStop adds f to what Stop runs (last added, first run).
func (s *Stack) OnStop(f func() error) { s.stops = append(s.stops, f) }

// Stop stops everything in reverse order of start and returns what failed.
func (s *Stack) Stop() error {
	var errs []error
	for i := len(s.stops) - 1; i >= 0; i-- {
		errs = append(errs, s.stops[i]())
	}
	s.stops = nil
	return errors.Join(errs...)
}

// Redis starts a redis-server (in Dir/redis unless o.Dir says otherwise),
// stopped with the stack.
func (s *Stack) Redis(ctx context.Context, o localsvc.RedisOptions) (*localsvc.Redis, error) {
	o.Dir = cmp.Or(o.Dir, filepath.Join(s.dir, "redis"))
	r, err := localsvc.StartRedis(ctx, o)
	return own(s, "redis", r, err)
}

// MinIO starts a MinIO server (in Dir/minio unless o.Dir says otherwise),
// stopped with the stack.
func (s *Stack) MinIO(ctx context.Context, o localsvc.MinIOOptions) (*localsvc.MinIO, error) {
	o.Dir = cmp.Or(o.Dir, filepath.Join(s.dir, "minio"))
	m, err := localsvc.StartMinIO(ctx, o)
	return own(s, "minio", m, err)
}

// own has the stack stop a server that started, or says which did not.
func own[T interface{ Stop(context.Context) error }](s *Stack, name string, server T, err error) (T, error) {
	if err != nil {
		var none T
		return none, fmt.Errorf("start %s: %w", name, err)
	}
	s.OnStop(func() error { return server.Stop(context.Background()) })
	return server, nil
}

// Serve serves h on a free loopback port until the stack stops, and
// returns its base URL.
func (s *Stack) Serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	s.OnStop(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		<-done
		return err
	})
	return "http://" + ln.Addr().String(), nil
}

// Start starts a process (see the function Start), stopped with the stack.
func (s *Stack) Start(c Command) (*Process, error) {
	p, err := Start(c)
	if err != nil {
		return nil, err
	}
	s.OnStop(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		return p.Stop(ctx)
	})
	return p, nil
}

// CreateBucket creates a bucket.
func CreateBucket(ctx context.Context, client *s3.Client, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

// AwaitHTTP waits until url answers 200 OK, or ctx ends.
func AwaitHTTP(ctx context.Context, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never answered: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}
