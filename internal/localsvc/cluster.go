package localsvc

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RedisCluster is a local Redis Cluster of primaries without replicas.
type RedisCluster struct {
	Nodes []*Redis
}

// StartRedisCluster starts n cluster-enabled redis-servers in dir, joins
// them with `redis-cli --cluster create` and waits until the cluster is ok.
func StartRedisCluster(ctx context.Context, dir string, n int) (*RedisCluster, error) {
	cli, err := FindBinary("redis-cli")
	if err != nil {
		return nil, err
	}
	c := &RedisCluster{}
	for i := range n {
		r, err := StartRedis(ctx, RedisOptions{Dir: filepath.Join(dir, fmt.Sprintf("node%d", i)), Cluster: true})
		if err != nil {
			c.Stop(context.WithoutCancel(ctx))
			return nil, err
		}
		c.Nodes = append(c.Nodes, r)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		c.Stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	// Slots are assigned at once; every node must also agree the cluster is ok.
	for _, addr := range c.Addrs() {
		host, port, _ := strings.Cut(addr, ":")
		if err := waitFor(ctx, 30*time.Second, func() error {
			out, err := exec.CommandContext(ctx, cli, "-h", host, "-p", port, "cluster", "info").Output()
			if err != nil {
				return err
			}
			if !strings.Contains(string(out), "cluster_state:ok") {
				return errors.New("cluster_state is not ok yet")
			}
			return nil
		}); err != nil {
			c.Stop(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("cluster node %s: %w", addr, err)
		}
	}
	return c, nil
}

// Addrs are the nodes' host:port.
func (c *RedisCluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr())
	}
	return out
}

// Stop stops every node.
func (c *RedisCluster) Stop(ctx context.Context) {
	for _, n := range c.Nodes {
		_ = n.Stop(ctx)
	}
}

// waitFor polls check until it succeeds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}
