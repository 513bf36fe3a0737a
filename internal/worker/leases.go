package worker

import (
	"context"

	"github.com/cropq/cropq/internal/lease"
)

// Lease is one running crop's lease (*lease.Lease).
type Lease interface {
	// Held reports whether the lease is still this attempt's; asked right
	// before paying.
	Held(ctx context.Context) (bool, error)
	Release(ctx context.Context) error
}

// RedisLeases adapts package lease's Leases to Leases (nil to nil).
func RedisLeases(l *lease.Leases) Leases {
	if l == nil {
		return nil
	}
	return redisLeases{l}
}

type redisLeases struct{ l *lease.Leases }

func (r redisLeases) Acquire(ctx context.Context, h lease.Holder) (context.Context, Lease, error) {
	lctx, l, err := r.l.Acquire(ctx, h)
	if l == nil {
		return lctx, nil, err // a nil interface, not a nil *lease.Lease in one
	}
	return lctx, l, err
}
