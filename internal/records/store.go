// Package records keeps the status record of every crop request id in Redis
// (status.Record): its state, attempts, the API's checkpoint (result URL and
// expiry) and where the result was stored, with a bounded history of
// transitions. It is cropq's write side; package status is what pipelines
// read.
//
// Transitions are atomic (optimistic WATCH/MULTI on the record's key) and
// ordered: an update from an attempt older than the record's is refused with
// ErrStaleAttempt, and terminal states never move. On a single Redis the
// same transaction keeps the per-batch counts and appends terminal
// transitions to the events stream, so a pipeline reading the stream misses
// nothing. On a Redis Cluster those keys live in other slots, so they are
// written right after the record's transaction: a crash in between can miss
// one count or event, never a record.
package records

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/status"
)

// Store reads and writes status records.
type Store struct {
	rdb     redis.UniversalClient
	cfg     status.Config
	cluster bool // keys of several slots cannot share a transaction
}

// NewStore returns a store on rdb.
func NewStore(rdb redis.UniversalClient, cfg status.Config) *Store {
	if cfg.Prefix == "" {
		cfg.Prefix = status.DefaultPrefix
	}
	if cfg.TTL <= 0 {
		cfg.TTL = status.DefaultTTL
	}
	if cfg.HistoryLimit <= 0 {
		cfg.HistoryLimit = 32
	}
	if cfg.EventsMaxLen <= 0 {
		cfg.EventsMaxLen = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	_, cluster := rdb.(*redis.ClusterClient)
	return &Store{rdb: rdb, cfg: cfg, cluster: cluster}
}

// Cluster reports whether the store runs on a Redis Cluster, where a
// record and the keys beside it are not written in one step.
func (s *Store) Cluster() bool { return s.cluster }

// Key returns the Redis key of id's record.
func (s *Store) Key(id string) string { return s.cfg.Prefix + "status:{" + id + "}" }

// Get reads id's record in one round trip.
func (s *Store) Get(ctx context.Context, id string) (status.Record, error) {
	b, err := s.rdb.Get(ctx, s.Key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return status.Record{}, status.ErrNotFound
	}
	if err != nil {
		return status.Record{}, fmt.Errorf("status: get %s: %w", id, err)
	}
	var r status.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return status.Record{}, fmt.Errorf("status: decode %s: %w", id, err)
	}
	return filled(r), nil
}

const maxTxRetries = 16

// Transition applies u to id's record atomically and returns the new record.
// A missing record is created when u starts an attempt (To == Running), so a
// task enqueued without a record still gets one. When the move is refused
// with a *TransitionError, the record as it stands is returned with it.
func (s *Store) Transition(ctx context.Context, id string, u Update) (status.Record, error) {
	key := s.Key(id)
	var out status.Record
	txf := func(tx *redis.Tx) error {
		var rec status.Record
		b, err := tx.Get(ctx, key).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
			if u.To != status.Running {
				return status.ErrNotFound
			}
			now := s.cfg.Now().UTC()
			rec = status.Record{RequestID: id, State: status.Queued, CreatedAt: now}
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(b, &rec); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			rec = filled(rec)
		}
		from := rec.State
		if err := Apply(&rec, u, s.cfg.Now(), s.cfg.HistoryLimit); err != nil {
			if errors.As(err, new(*status.TransitionError)) {
				out = rec // apply refuses before it changes anything
			}
			return err
		}
		nb, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		counted := b != nil // a record created here was never counted as queued
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, nb, s.cfg.TTL)
			if !s.cluster {
				s.sideEffects(ctx, p, rec, from, counted)
			}
			return nil
		})
		if err == nil && s.cluster {
			p := s.rdb.Pipeline()
			if s.sideEffects(ctx, p, rec, from, counted) {
				_, err = p.Exec(ctx)
			}
		}
		if err != nil {
			return err
		}
		out = rec
		return nil
	}
	for i := 0; i < maxTxRetries; i++ {
		err := s.rdb.Watch(ctx, txf, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("status: %s → %s: %w", id, u.To, err)
		}
		return out, nil
	}
	return status.Record{}, fmt.Errorf("status: %s → %s: %w", id, u.To, status.ErrConflict)
}

// sideEffects queues the batch counts and the event of a transition on p,
// and reports whether it queued anything.
func (s *Store) sideEffects(ctx context.Context, p redis.Pipeliner, rec status.Record, from status.State, counted bool) bool {
	any := false
	if rec.BatchID != "" && from != rec.State {
		bk := s.batchKey(rec.Tenant, rec.BatchID)
		if counted {
			p.HIncrBy(ctx, bk, string(from), -1)
		}
		p.HIncrBy(ctx, bk, string(rec.State), 1)
		if rec.State == status.Succeeded && rec.ReusedFrom != "" {
			p.HIncrBy(ctx, bk, SavedCount, 1)
		}
		p.PExpire(ctx, bk, s.cfg.TTL)
		any = true
	}
	if s.indexTransition(ctx, p, rec, from, counted) {
		any = true
	}
	if rec.State.Terminal() {
		p.XAdd(ctx, s.eventArgs(rec))
		any = true
	}
	return any
}

// Cancel moves a request that has not started to canceled.
func (s *Store) Cancel(ctx context.Context, id string) (status.Record, error) {
	return s.Transition(ctx, id, Update{To: status.Canceled})
}

// filled is r with what a lean queued record leaves out: its update time
// and the first entry of its history are its creation.
func filled(r status.Record) status.Record {
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = r.CreatedAt
	}
	if len(r.History) == 0 && !r.CreatedAt.IsZero() {
		r.History = []status.Transition{{State: status.Queued, At: r.CreatedAt}}
	}
	return r
}
