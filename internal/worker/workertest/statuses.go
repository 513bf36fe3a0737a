package workertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/status"
)

// Statuses is an in-memory status store (worker.StatusStore). Its
// transitions follow records.Apply, the rules the Redis store applies in its
// transaction, and its records go through JSON as they do in Redis; batch
// counts and the events stream are not kept.
type Statuses struct {
	// Refuse, when set, is asked before every write; its error refuses the
	// write, unchanged, as a Redis refusing writes would (maxmemory, an
	// outage). It may also act on the world (take a lease) to stage what
	// happens during a write.
	Refuse func(id string, u records.Update) error

	mu      sync.Mutex
	recs    map[string][]byte
	updates map[string][]records.Update
}

// NewStatuses returns an empty store.
func NewStatuses() *Statuses {
	return &Statuses{recs: map[string][]byte{}, updates: map[string][]records.Update{}}
}

// historyLimit is status.Config's default.
const historyLimit = 32

// Create writes rec as a new queued record unless id has one, as
// records.Store.Create does.
func (s *Statuses) Create(ctx context.Context, rec status.Record) (status.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return status.Record{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.recs[rec.RequestID]; ok {
		old, err := decode(b)
		return old, false, err
	}
	rec.State, rec.CreatedAt = status.Queued, time.Now().UTC()
	rec.UpdatedAt, rec.History = rec.CreatedAt, []status.Transition{{State: status.Queued, At: rec.CreatedAt}}
	return s.store(rec)
}

// Put stores rec as it is, to stage a record in any state (a checkpoint
// left by an earlier attempt, a rescued request).
func (s *Statuses) Put(rec status.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, err := s.store(rec); err != nil {
		panic(err) // a Record always encodes
	}
}

// store encodes rec; s.mu held.
func (s *Statuses) store(rec status.Record) (status.Record, bool, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return status.Record{}, false, fmt.Errorf("status: encode %s: %w", rec.RequestID, err)
	}
	s.recs[rec.RequestID] = b
	out, err := decode(b)
	return out, true, err
}

// decode reads a stored record, filling in what a lean queued record
// leaves out, as the Redis store does.
func decode(b []byte) (status.Record, error) {
	var r status.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return status.Record{}, fmt.Errorf("status: decode: %w", err)
	}
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = r.CreatedAt
	}
	if len(r.History) == 0 && !r.CreatedAt.IsZero() {
		r.History = []status.Transition{{State: status.Queued, At: r.CreatedAt}}
	}
	return r, nil
}

// Get returns id's record, or status.ErrNotFound.
func (s *Statuses) Get(ctx context.Context, id string) (status.Record, error) {
	if err := ctx.Err(); err != nil {
		return status.Record{}, fmt.Errorf("status: get %s: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.recs[id]
	if !ok {
		return status.Record{}, status.ErrNotFound
	}
	return decode(b)
}

// Transition applies u to id's record as records.Store.Transition does: a
// missing record is written again (records.Again); a refused move returns
// the record as it stands with the *status.TransitionError.
func (s *Statuses) Transition(ctx context.Context, id string, u records.Update) (status.Record, error) {
	wrap := func(err error) error { return fmt.Errorf("status: %s → %s: %w", id, u.To, err) }
	if err := ctx.Err(); err != nil {
		return status.Record{}, wrap(err)
	}
	if s.Refuse != nil {
		if err := s.Refuse(id, u); err != nil {
			return status.Record{}, wrap(err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var rec status.Record
	if b, ok := s.recs[id]; ok {
		var err error
		if rec, err = decode(b); err != nil {
			return status.Record{}, wrap(err)
		}
	} else {
		// As the Redis store does: written again from u.Seed, its history
		// starting with this move.
		var ok bool
		if rec, ok = records.Again(id, u, time.Now()); !ok {
			return status.Record{}, wrap(status.ErrNotFound)
		}
	}
	if err := records.Apply(&rec, u, time.Now(), historyLimit); err != nil {
		var te *status.TransitionError
		if errors.As(err, &te) {
			return rec, wrap(err)
		}
		return status.Record{}, wrap(err)
	}
	out, _, err := s.store(rec)
	if err != nil {
		return status.Record{}, wrap(err)
	}
	s.updates[id] = append(s.updates[id], u)
	return out, nil
}

// Cancel moves a request that has not started to canceled.
func (s *Statuses) Cancel(ctx context.Context, id string) (status.Record, error) {
	return s.Transition(ctx, id, records.Update{To: status.Canceled})
}

// Updates are the writes made to id's record, in order (refused ones left
// out).
func (s *Statuses) Updates(id string) []records.Update {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]records.Update(nil), s.updates[id]...)
}

// RefuseWrites is a Refuse that refuses every write whose target state is
// in states (all writes when none is given) with err.
func RefuseWrites(err error, states ...status.State) func(string, records.Update) error {
	return func(_ string, u records.Update) error {
		if len(states) == 0 {
			return err
		}
		for _, st := range states {
			if u.To == st {
				return err
			}
		}
		return nil
	}
}
