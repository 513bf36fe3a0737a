package records

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// errRefusesWrites is a Redis that answers reads but refuses writes: at its
// maxmemory with the noeviction policy (OOM), or a read-only replica.
var errRefusesWrites = errors.New("redis refuses writes (OOM or read-only): raise maxmemory or fix the topology; nothing can be queued or recorded")

// Writable reports whether Redis takes a write, with a tiny key under the
// store's prefix that expires on its own: reads alone (PING) say nothing of
// an OOM. The readiness of every process that records.
func (s *Store) Writable(ctx context.Context) error {
	host, _ := os.Hostname()
	err := s.rdb.Set(ctx, s.keys().Writable(host), "1", 30*time.Second).Err()
	switch {
	case err == nil:
		return nil
	case redis.HasErrorPrefix(err, "OOM"), redis.HasErrorPrefix(err, "READONLY"):
		return fmt.Errorf("%w: %w", errRefusesWrites, err)
	default:
		return fmt.Errorf("redis: %w", err)
	}
}
