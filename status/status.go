// Package status keeps one record per crop request id in Redis: its state,
// attempts, the API's checkpoint (result URL and expiry) and where the result
// was stored, with a bounded history of transitions.
//
// Transitions are atomic (optimistic WATCH/MULTI on the record's single key,
// so it also works on Redis Cluster) and ordered: an update from an attempt
// older than the record's is refused with ErrStaleAttempt, and terminal
// states never move.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// State is where a request is in its life.
type State string

const (
	Queued    State = "queued"    // accepted and enqueued
	Running   State = "running"   // a worker holds it
	Retrying  State = "retrying"  // an attempt failed; another will come
	Cropped   State = "cropped"   // the API answered; the result URL is checkpointed
	Succeeded State = "succeeded" // the result is in S3
	Failed    State = "failed"    // given up; ErrorCode says why
	Canceled  State = "canceled"  // canceled before it started
)

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool { return s == Succeeded || s == Failed || s == Canceled }

// allowed lists the transitions; a new attempt may start from any
// non-terminal state (a crash can leave a record anywhere).
var allowed = map[State][]State{
	Queued:   {Running, Failed, Canceled},
	Running:  {Running, Cropped, Retrying, Succeeded, Failed},
	Retrying: {Running, Retrying, Failed},
	Cropped:  {Running, Cropped, Retrying, Succeeded, Failed},
}

func canMove(from, to State) bool {
	for _, s := range allowed[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Record is the status of one request id.
type Record struct {
	RequestID string    `json:"requestId"`
	State     State     `json:"state"`
	Attempt   int       `json:"attempt"` // 1-based; 0 while queued
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`

	// What was asked, so a repeated id can be told apart from a new request.
	TargetWidth  int    `json:"targetWidth,omitempty"`
	TargetHeight int    `json:"targetHeight,omitempty"`
	Source       string `json:"source,omitempty"` // "url" or "base64"
	SourceURL    string `json:"sourceUrl,omitempty"`
	BatchID      string `json:"batchId,omitempty"`

	ErrorCode    string `json:"errorCode,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`

	// Checkpoint of the paid API call: reused by later attempts until it expires.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// PaidCalls and Usage add up every successful API call for this id.
	PaidCalls int `json:"paidCalls"`
	Usage     int `json:"usage"`

	Stored *Stored `json:"stored,omitempty"`

	History []Transition `json:"history,omitempty"`
}

// Checkpoint is a successful API answer whose result is not yet stored.
type Checkpoint struct {
	ResultURL    string    `json:"resultUrl"`
	ExpiresAt    time.Time `json:"expiresAt,omitzero"`
	Width        int       `json:"width"`
	Height       int       `json:"height"`
	APIRequestID string    `json:"apiRequestId,omitempty"`
	TraceID      string    `json:"traceId,omitempty"`
}

// Usable reports whether the checkpoint's URL can still be downloaded at now,
// with margin to spare for the copy itself.
func (c *Checkpoint) Usable(now time.Time, margin time.Duration) bool {
	if c == nil || c.ResultURL == "" {
		return false
	}
	return c.ExpiresAt.IsZero() || now.Add(margin).Before(c.ExpiresAt)
}

// Stored is where the result landed.
type Stored struct {
	Bucket       string `json:"bucket"`
	Key          string `json:"key"`
	ETag         string `json:"etag,omitempty"`
	Size         int64  `json:"size"`
	ContentType  string `json:"contentType,omitempty"`
	Width        int    `json:"width,omitempty"`
	Height       int    `json:"height,omitempty"`
	APIRequestID string `json:"apiRequestId,omitempty"`
}

// Transition is one entry of a record's history.
type Transition struct {
	State     State     `json:"state"`
	At        time.Time `json:"at"`
	Attempt   int       `json:"attempt,omitempty"`
	ErrorCode string    `json:"errorCode,omitempty"`
	Message   string    `json:"message,omitempty"`
}

// Update is one transition request.
type Update struct {
	To      State
	Attempt int // the attempt making the change; older than the record's → ErrStaleAttempt

	ErrorCode    string
	ErrorMessage string

	Checkpoint      *Checkpoint // set the checkpoint (a paid call succeeded)
	ClearCheckpoint bool        // forget the checkpoint (its URL expired)
	PaidUsage       int         // usage billed by the call that made Checkpoint
	Stored          *Stored
}

// Errors of Transition and Get.
var (
	ErrNotFound     = errors.New("status: no record for this request id")
	ErrStaleAttempt = errors.New("status: update from an older attempt")
	ErrConflict     = errors.New("status: record changed concurrently too often")
)

// TransitionError is a move the state machine does not allow.
type TransitionError struct {
	RequestID string
	From, To  State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("status: request %s cannot move from %s to %s", e.RequestID, e.From, e.To)
}

// Config configures a Store.
type Config struct {
	// Prefix of every key (default "cropq:"); the record of id lives at
	// Prefix+"status:{"+id+"}", hash-tagged so that it can share a Cluster
	// slot with keys derived from the same id.
	Prefix string
	// TTL of a record after its last update (default 7 days).
	TTL time.Duration
	// HistoryLimit bounds the history kept per record (default 32).
	HistoryLimit int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Store reads and writes status records.
type Store struct {
	rdb redis.UniversalClient
	cfg Config
}

// NewStore returns a store on rdb.
func NewStore(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.Prefix == "" {
		cfg.Prefix = "cropq:"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 7 * 24 * time.Hour
	}
	if cfg.HistoryLimit <= 0 {
		cfg.HistoryLimit = 32
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{rdb: rdb, cfg: cfg}
}

// Key returns the Redis key of id's record.
func (s *Store) Key(id string) string { return s.cfg.Prefix + "status:{" + id + "}" }

// Get reads id's record in one round trip.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	b, err := s.rdb.Get(ctx, s.Key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("status: get %s: %w", id, err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("status: decode %s: %w", id, err)
	}
	return r, nil
}

// Create writes rec as a new "queued" record unless one exists already; it
// returns the record that is there after the call and whether it was created.
func (s *Store) Create(ctx context.Context, rec Record) (Record, bool, error) {
	now := s.cfg.Now().UTC()
	rec.State = Queued
	rec.CreatedAt, rec.UpdatedAt = now, now
	rec.History = []Transition{{State: Queued, At: now}}
	b, err := json.Marshal(rec)
	if err != nil {
		return Record{}, false, fmt.Errorf("status: encode %s: %w", rec.RequestID, err)
	}
	ok, err := s.rdb.SetNX(ctx, s.Key(rec.RequestID), b, s.cfg.TTL).Result()
	if err != nil {
		return Record{}, false, fmt.Errorf("status: create %s: %w", rec.RequestID, err)
	}
	if ok {
		return rec, true, nil
	}
	existing, err := s.Get(ctx, rec.RequestID)
	return existing, false, err
}

// Delete removes id's record (used to undo a Create whose enqueue failed).
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.rdb.Del(ctx, s.Key(id)).Err(); err != nil {
		return fmt.Errorf("status: delete %s: %w", id, err)
	}
	return nil
}

const maxTxRetries = 16

// Transition applies u to id's record atomically and returns the new record.
// A missing record is created when u starts an attempt (To == Running), so a
// task enqueued without a record still gets one.
func (s *Store) Transition(ctx context.Context, id string, u Update) (Record, error) {
	key := s.Key(id)
	var out Record
	txf := func(tx *redis.Tx) error {
		var rec Record
		b, err := tx.Get(ctx, key).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
			if u.To != Running {
				return ErrNotFound
			}
			now := s.cfg.Now().UTC()
			rec = Record{RequestID: id, State: Queued, CreatedAt: now}
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(b, &rec); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
		}
		if err := s.apply(&rec, u); err != nil {
			return err
		}
		nb, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, nb, s.cfg.TTL)
			return nil
		})
		out = rec
		return err
	}
	for i := 0; i < maxTxRetries; i++ {
		err := s.rdb.Watch(ctx, txf, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return Record{}, fmt.Errorf("status: %s → %s: %w", id, u.To, err)
		}
		return out, nil
	}
	return Record{}, fmt.Errorf("status: %s → %s: %w", id, u.To, ErrConflict)
}

func (s *Store) apply(rec *Record, u Update) error {
	if u.Attempt < rec.Attempt {
		return ErrStaleAttempt
	}
	if !canMove(rec.State, u.To) {
		return &TransitionError{RequestID: rec.RequestID, From: rec.State, To: u.To}
	}
	now := s.cfg.Now().UTC()
	rec.State = u.To
	rec.Attempt = u.Attempt
	rec.UpdatedAt = now
	switch u.To {
	case Retrying, Failed:
		rec.ErrorCode, rec.ErrorMessage = u.ErrorCode, u.ErrorMessage
	case Succeeded:
		rec.ErrorCode, rec.ErrorMessage = "", ""
	}
	if u.ClearCheckpoint {
		rec.Checkpoint = nil
	}
	if u.Checkpoint != nil {
		cp := *u.Checkpoint
		rec.Checkpoint = &cp
		rec.PaidCalls++
		rec.Usage += u.PaidUsage
	}
	if u.Stored != nil {
		st := *u.Stored
		rec.Stored = &st
		rec.Checkpoint = nil // stored: the URL is no longer needed
	}
	rec.History = append(rec.History, Transition{State: u.To, At: now, Attempt: u.Attempt, ErrorCode: u.ErrorCode, Message: u.ErrorMessage})
	if n := len(rec.History) - s.cfg.HistoryLimit; n > 0 {
		rec.History = append(rec.History[:0:0], rec.History[n:]...)
	}
	return nil
}
