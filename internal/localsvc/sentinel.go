package localsvc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SentinelOptions configure StartRedisSentinel.
type SentinelOptions struct {
	Dir    string // config, data and log directory (required)
	Master string // the monitored primary's name (required)
	// MasterAddr is the primary's host:port (required).
	MasterAddr string
	Binary     string // "": FindBinary("redis-server"), run with --sentinel
}

// RedisSentinel is a running Redis Sentinel that monitors one primary,
// with a quorum of 1 and short timeouts, so that a test can fail over in
// seconds.
type RedisSentinel struct {
	process
	port int
}

// StartRedisSentinel starts a sentinel on a free 127.0.0.1 port and waits
// until it answers.
func StartRedisSentinel(ctx context.Context, o SentinelOptions) (*RedisSentinel, error) {
	if o.Binary == "" {
		bin, err := FindBinary("redis-server")
		if err != nil {
			return nil, err
		}
		o.Binary = bin
	}
	host, port, ok := strings.Cut(o.MasterAddr, ":")
	if !ok || o.Master == "" {
		return nil, fmt.Errorf("redis sentinel: need Master and MasterAddr host:port, got %q, %q", o.Master, o.MasterAddr)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	return startOnFreePort(func(p int) (*RedisSentinel, error) {
		// Sentinel rewrites its config file as it learns the topology, so it
		// gets a fresh one per start attempt.
		conf := filepath.Join(o.Dir, fmt.Sprintf("sentinel-%d.conf", p))
		m := o.Master
		text := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nprotected-mode no\n", p, o.Dir) +
			fmt.Sprintf("sentinel monitor %s %s %s 1\n", m, host, port) +
			fmt.Sprintf("sentinel down-after-milliseconds %s 1000\n", m) +
			fmt.Sprintf("sentinel failover-timeout %s 5000\n", m) +
			fmt.Sprintf("sentinel parallel-syncs %s 1\n", m)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		s := &RedisSentinel{port: p}
		addr := s.Addr()
		s.process = process{
			name: "redis-sentinel", bin: o.Binary, logPath: filepath.Join(o.Dir, "sentinel.log"),
			args:  []string{conf, "--sentinel"},
			ready: func(ctx context.Context, pid int) error { return redisReady(ctx, addr, pid) },
		}
		if err := s.Start(ctx); err != nil {
			return nil, err
		}
		return s, nil
	})
}

// Addr is host:port.
func (s *RedisSentinel) Addr() string { return "127.0.0.1:" + portString(s.port) }
