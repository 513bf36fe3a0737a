package records

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Versions before 0.22 gave a record its TTL when it was created, so a
// request that waited longer than CROPQ_STATUS_TTL lost its record. The
// records such a version left behind, still waiting, are made persistent
// once per deployment after an upgrade (PersistWaiting).

// MigratedKey marks that PersistWaiting ran to its end on this Redis.
func (s *Store) MigratedKey() string { return s.keys().MigratedWaitingTTL() }

// persistScript removes the TTL of the record KEYS[1] when it has one and
// its request still waits; 1 when it did.
var persistScript = redis.NewScript(`
if redis.call('PTTL', KEYS[1]) <= 0 then return 0 end
local ok, r = pcall(cjson.decode, redis.call('GET', KEYS[1]))
if not ok or type(r) ~= 'table' then return 0 end
local st = r['state']
if st == 'succeeded' or st == 'failed' or st == 'canceled' then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
`)

// PersistWaiting removes, once per deployment, the TTL that an earlier
// version gave the records of requests that still wait (queued, running,
// retrying, cropped), so that they live until their request ends as
// records written today do. It scans the records (on every primary of a
// Cluster) a page at a time, and returns how many it changed; done is
// false when another process holds the migration or it ran already.
func (s *Store) PersistWaiting(ctx context.Context) (changed int64, done bool, err error) {
	var n atomic.Int64 // a Cluster's primaries are scanned at once
	ok, err := s.rdb.SetNX(ctx, s.MigratedKey(), "running", time.Hour).Result()
	if err != nil || !ok {
		return 0, false, err
	}
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, s.keys().StatusPattern(), 1000).Result()
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				pipe := c.Pipeline()
				cmds := make([]*redis.Cmd, len(keys))
				for i, k := range keys {
					cmds[i] = persistScript.Eval(ctx, pipe, []string{k})
				}
				if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
					return err
				}
				for _, c := range cmds {
					if v, _ := c.Int64(); v == 1 {
						n.Add(1)
					}
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, isCluster := s.rdb.(*redis.ClusterClient); isCluster {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.rdb)
	}
	if err != nil {
		// Another process may take it over once the mark expires.
		_ = s.rdb.Del(context.WithoutCancel(ctx), s.MigratedKey()).Err()
		return n.Load(), false, fmt.Errorf("status: persist waiting records: %w", err)
	}
	if err := s.rdb.Set(ctx, s.MigratedKey(), "done", 0).Err(); err != nil {
		return n.Load(), true, fmt.Errorf("status: persist waiting records: %w", err)
	}
	return n.Load(), true, nil
}
