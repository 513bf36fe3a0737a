package records

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// batchKey is the counts of a tenant's batch: batch ids are the tenant's
// own, so two tenants' batches of one name are two batches. The default
// tenant's keep the key they had before tenants existed.
func (s *Store) batchKey(tenant, batchID string) string {
	return s.keys().Batch(keyTenant(tenant), batchID)
}

// keyTenant is tenant as the batch keys name it: "" for the default
// tenant (rediskey's Batch).
func keyTenant(tenant string) string {
	if tenant == tasks.DefaultTenant {
		return ""
	}
	return tenant
}

// BatchCounts returns how many records of the tenant's batchID are in each
// state (an empty map for an unknown batch).
func (s *Store) BatchCounts(ctx context.Context, tenant, batchID string) (map[status.State]int64, error) {
	counts, _, err := s.Batch(ctx, tenant, batchID)
	return counts, err
}

// Batch returns the counts of a tenant's batch, as BatchCounts, and the
// lowest priority among its requests (BatchState says more).
func (s *Store) Batch(ctx context.Context, tenant, batchID string) (counts map[status.State]int64, priority string, err error) {
	b, err := s.BatchState(ctx, tenant, batchID)
	return b.Counts, b.Priority, err
}

// SavedCount is the field of a batch's counts that tallies its requests
// that reused a stored result instead of paying (package dedup).
const SavedCount = "saved"

// UnchangedCount is the field of a batch's counts that tallies its
// requests whose destination already held their crop (Record.Unchanged):
// succeeded without a copy or a write. They count as saved too.
const UnchangedCount = "unchanged"

// BatchUnchanged returns how many of a tenant's batch's requests found
// their crop already at their destination.
func (s *Store) BatchUnchanged(ctx context.Context, tenant, batchID string) (int64, error) {
	n, err := s.rdb.HGet(ctx, s.batchKey(tenant, batchID), UnchangedCount).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("status: batch %s: %w", batchID, err)
	}
	return n, nil
}

// BatchSaved returns how many of a tenant's batch's requests reused a
// stored result: paid calls saved.
func (s *Store) BatchSaved(ctx context.Context, tenant, batchID string) (int64, error) {
	n, err := s.rdb.HGet(ctx, s.batchKey(tenant, batchID), SavedCount).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("status: batch %s: %w", batchID, err)
	}
	return n, nil
}
