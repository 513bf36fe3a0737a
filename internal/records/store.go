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
//
// Nothing expires while it waits: a record gets its TTL when its request
// reaches a terminal state, a batch's keys when its last request does
// (expiry.go).
package records

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/rediskey"
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
func (s *Store) Key(id string) string { return s.keys().Status(id) }

func (s *Store) keys() rediskey.Prefix { return rediskey.Prefix(s.cfg.Prefix) }

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
// A missing record is written again when u starts an attempt (To ==
// Running) or, with a Seed, fails the request: so a task whose record Redis
// lost still gets one, from what its payload carries (see Update.Seed),
// and its batch counts it again (moveScript). When the move is refused
// with a *TransitionError, the record as it stands is returned with it.
//
// The record is written without a TTL while its request waits, and with
// Config.TTL once it is terminal; see expiry.go.
func (s *Store) Transition(ctx context.Context, id string, u Update) (status.Record, error) {
	key := s.Key(id)
	var out status.Record
	txf := func(tx *redis.Tx) error {
		var rec status.Record
		b, err := tx.Get(ctx, key).Bytes()
		lost := false
		switch {
		case errors.Is(err, redis.Nil):
			if rec, lost = Again(id, u, s.cfg.Now()); !lost {
				return status.ErrNotFound
			}
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(b, &rec); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			rec = filled(rec)
		}
		from, prev := rec.State, rec
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
		var place *redis.Cmd
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, nb, time.Duration(s.recordTTL(rec.State))*time.Millisecond)
			if !s.cluster {
				place, _ = s.sideEffects(ctx, p, rec, from, lost)
				s.replayEffects(ctx, p, prev, u)
			}
			return nil
		})
		if err == nil && s.cluster {
			// Other slots: after the record (a crash in between leaves a
			// replayed request queued without its entry; replaying it
			// again is refused, as it is no longer failed: see Replay).
			p := s.rdb.Pipeline()
			var queued bool
			if place, queued = s.sideEffects(ctx, p, rec, from, lost); queued || u.Replay {
				s.replayEffects(ctx, p, prev, u)
				_, err = p.Exec(ctx)
			}
		}
		if err != nil {
			return err
		}
		seq, due := placeOf(place)
		if due {
			// The batch is done and its report is due in S3: listed for the
			// report writer. Best effort: the registration that asked for
			// the report listed it already (ExpectReport).
			_ = s.rdb.SAdd(ctx, s.ReportsDueKey(), batchMember(rec.Tenant, rec.BatchID)).Err()
		}
		if lost && seq > 0 {
			// The batch index gave the record its place: write it down (a
			// crash before leaves it out of the grid, never a wrong record).
			if err := s.placed(ctx, id, seq); err != nil {
				return err
			}
			rec.BatchSeq = seq
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

// Again is the queued record Transition writes again for id, whose record
// is gone, before it applies u, and whether u may write it: a move to
// running (with u.Seed's request, or the id alone), or a failure with a
// seed. It is accepted at the seed's CreatedAt (now when unknown), and
// pure, so that in-memory stores (package worker/workertest) do the same.
func Again(id string, u Update, now time.Time) (status.Record, bool) {
	if u.To != status.Running && (u.To != status.Failed || u.Seed == nil) {
		return status.Record{}, false
	}
	rec := status.Record{}
	if u.Seed != nil {
		rec = *u.Seed
	}
	rec.RequestID, rec.State, rec.Attempt, rec.BatchSeq = id, status.Queued, 0, 0
	rec.UpdatedAt, rec.History, rec.Checkpoint, rec.Stored, rec.Task = time.Time{}, nil, nil, nil, ""
	rec.ErrorCode, rec.ErrorMessage, rec.PaidCalls, rec.Usage, rec.ExpiredRecrops, rec.ReusedFrom, rec.Unchanged = "", "", 0, 0, 0, "", false
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = now
	}
	rec.CreatedAt = rec.CreatedAt.UTC()
	return rec, true // its history starts with the move that writes it again
}

// placeOf is the place moveScript replied (0 when it did not run), and
// whether it said the batch's report is now due.
func placeOf(c *redis.Cmd) (seq int64, due bool) {
	if c == nil {
		return 0, false
	}
	v, _ := c.Int64Slice()
	if len(v) != 2 {
		return 0, false
	}
	return v[0], v[1] == 1
}

// sideEffects queues the batch counts and the event of a transition on p,
// and reports whether it queued anything; place is the batch script's
// reply (the record's place in its batch), nil when there is none. lost is
// a record written again (see Transition).
func (s *Store) sideEffects(ctx context.Context, p redis.Pipeliner, rec status.Record, from status.State, lost bool) (place *redis.Cmd, queued bool) {
	if rec.BatchID != "" && (from != rec.State || lost) {
		place = s.batchMove(ctx, p, rec, from, lost)
		if lost {
			// Its batch may be gone with it: list it again (NX: a batch
			// keeps its first creation time).
			p.ZAddNX(ctx, s.BatchesKey(), redis.Z{Score: float64(rec.CreatedAt.UnixMilli()), Member: batchMember(rec.Tenant, rec.BatchID)})
		}
		queued = true
	}
	if s.countFailure(ctx, p, rec, from) {
		queued = true
	}
	if rec.State.Terminal() {
		p.XAdd(ctx, s.eventArgs(rec))
		queued = true
	}
	return place, queued
}

// FailWaiting ends, failed with code, the request seed names while it
// waits to be fed (queued), or writes its record again, failed, when
// Redis lost it (from seed: Update.Seed): what the feeder does with a
// backlog entry that can never be fed, so that the request is answered by
// its record and counted in its batch rather than lost. A request that
// moved on meanwhile (its task runs, or it finished) is left as it is.
func (s *Store) FailWaiting(ctx context.Context, seed status.Record, code, message string) (status.Record, error) {
	for i := 0; i < maxTxRetries; i++ {
		rec, err := s.Get(ctx, seed.RequestID)
		switch {
		case errors.Is(err, status.ErrNotFound):
		case err != nil:
			return status.Record{}, err
		case rec.State != status.Queued:
			return rec, nil
		}
		out, err := s.Transition(ctx, seed.RequestID, Update{To: status.Failed, Attempt: rec.Attempt, ErrorCode: code, ErrorMessage: message, Seed: &seed})
		if errors.Is(err, ErrStaleAttempt) || errors.As(err, new(*status.TransitionError)) {
			continue // it moved meanwhile: look again
		}
		return out, err
	}
	return status.Record{}, fmt.Errorf("status: fail %s: %w", seed.RequestID, status.ErrConflict)
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
