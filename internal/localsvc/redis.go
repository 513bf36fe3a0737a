package localsvc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// RedisOptions configure StartRedis.
type RedisOptions struct {
	Dir        string // data and log directory (required)
	Port       int    // 0: a free port
	AppendOnly bool   // AOF persistence, so a restart keeps the data
	Binary     string // "" : FindBinary("redis-server")
	// Cluster starts the server with cluster mode enabled (a cluster node).
	Cluster bool
	// ReplicaOf, host:port, starts the server as a replica of that primary.
	ReplicaOf string
}

// Redis is a running redis-server.
type Redis struct {
	process
	port int
}

// StartRedis starts redis-server on 127.0.0.1 and waits until it answers PING.
func StartRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	if o.Binary == "" {
		bin, err := FindBinary("redis-server")
		if err != nil {
			return nil, err
		}
		o.Binary = bin
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	if o.Port == 0 {
		return startOnFreePort(func(port int) (*Redis, error) {
			o.Port = port
			return startRedis(ctx, o)
		})
	}
	return startRedis(ctx, o)
}

func startRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	aof := "no"
	if o.AppendOnly {
		aof = "yes"
	}
	addr := "127.0.0.1:" + portString(o.Port)
	r := &Redis{port: o.Port}
	args := []string{"--bind", "127.0.0.1", "--port", portString(o.Port), "--dir", o.Dir, "--save", "",
		"--appendonly", aof, "--appendfsync", "everysec", "--daemonize", "no", "--protected-mode", "no"}
	if o.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(o.Dir, "nodes.conf"),
			"--cluster-node-timeout", "5000")
	}
	if o.ReplicaOf != "" {
		host, port, ok := strings.Cut(o.ReplicaOf, ":")
		if !ok {
			return nil, fmt.Errorf("redis-server: ReplicaOf %q is not host:port", o.ReplicaOf)
		}
		args = append(args, "--replicaof", host, port)
	}
	r.process = process{
		name: "redis-server", bin: o.Binary, logPath: filepath.Join(o.Dir, "redis.log"),
		args:  args,
		ready: func(ctx context.Context, pid int) error { return redisReady(ctx, addr, pid) },
	}
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Addr is host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + portString(r.port) }

// URL is a redis:// URL of database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// redisReady asks INFO server, speaking just enough RESP that this package
// needs no client, and checks that the answering server is process pid.
func redisReady(ctx context.Context, addr string, pid int) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("INFO server\r\n")); err != nil {
		return err
	}
	rd := bufio.NewReader(conn)
	head, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if !strings.HasPrefix(head, "$") || err != nil || n < 0 || n > 1<<20 {
		return fmt.Errorf("redis not ready: %q", strings.TrimSpace(head))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rd, body); err != nil {
		return err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			if v != strconv.Itoa(pid) {
				return fmt.Errorf("redis on %s is process %s, not %d", addr, v, pid)
			}
			return nil
		}
	}
	return fmt.Errorf("redis on %s: no process_id in INFO", addr)
}
