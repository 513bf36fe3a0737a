// Package lock holds a Redis key for one holder at a time, for a TTL that
// the holder renews: a holder that dies stops renewing, and the key is
// free again within the TTL. It is the feeder's leadership lock (package
// backlog) and the dedup claims on crop keys (package dedup); the crop
// leases of package lease are another thing (a sorted set of deadlines on
// Redis's clock, which a rescuer takes away).
//
// The key holds the holder's token; only that token renews or releases it,
// so a holder that paused past its TTL never frees a key another took.
package lock

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lock is one key on rdb, held by one token at a time.
type Lock struct {
	rdb redis.Scripter
	key string
}

// New returns the lock held at key.
func New(rdb redis.Scripter, key string) Lock { return Lock{rdb: rdb, key: key} }

// Acquire takes the lock for token for ttl when it is free, or renews it
// when token holds it, and returns its holder: token when it is token's.
func (l Lock) Acquire(ctx context.Context, token string, ttl time.Duration) (holder string, err error) {
	holder, err = acquireScript.Run(ctx, l.rdb, []string{l.key}, token, ttl.Milliseconds()).Text()
	if err != nil {
		return "", fmt.Errorf("lock %s: acquire: %w", l.key, err)
	}
	return holder, nil
}

// Renew extends the lock to ttl from now while token holds it, and
// reports whether it does: a lock that expired stays free.
func (l Lock) Renew(ctx context.Context, token string, ttl time.Duration) (bool, error) {
	n, err := renewScript.Run(ctx, l.rdb, []string{l.key}, token, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("lock %s: renew: %w", l.key, err)
	}
	return n == 1, nil
}

// Release frees the lock while token holds it.
func (l Lock) Release(ctx context.Context, token string) error {
	if err := releaseScript.Run(ctx, l.rdb, []string{l.key}, token).Err(); err != nil {
		return fmt.Errorf("lock %s: release: %w", l.key, err)
	}
	return nil
}

// acquireScript: KEYS[1] the lock, ARGV[1] the token, ARGV[2] the TTL in ms.
var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return cur
`)

var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)
