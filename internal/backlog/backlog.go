// Package backlog holds the requests that wait for the API's quota, and the
// feeder that moves them into asynq a little ahead of it.
//
// A backlog far larger than the quota is cropq's normal state: days of
// backfill, with urgent listings arriving all the while, from several
// tenants sharing one account. asynq's queues are FIFO and static, so the
// waiting requests live here instead, one Redis list per (lane, tenant), and
// asynq holds only the short window the workers are about to run: task leases,
// retries, the archive and the web UI stay asynq's.
//
// The feeder (one at a time in the fleet, by its leadership lock) keeps that window at
// about the effective rate × Lead. It drains lanes strictly (urgent, then
// normal, then backfill) and, within a lane, gives each tenant with work a
// share of the window in proportion to its weight (deficit round-robin;
// work-conserving: a tenant alone gets it all). Each tenant's urgent work
// is strict only within its urgent budget; beyond it, it is served as the
// tenant's normal work (budget.go).
//
// Nothing is lost or fed twice by a crash: an entry is removed from the head
// of its list only after its task was enqueued, by a script that checks the
// head is still that entry, and the task's id is the request id, so a second
// feed of the same entry is refused by asynq.
package backlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Entry is one request waiting in the backlog.
type Entry struct {
	Lane      string
	Tenant    string
	RequestID string
	// Payload is the task payload the feeder enqueues; empty for an id-only
	// entry, whose task is rebuilt from the request's record.
	Payload []byte
	// BatchID is the batch of an id-only entry's request, kept in the entry
	// so that its batch still counts it if Redis loses the record (see
	// TaskEnqueuer.Drop); ignored when Payload is set, which names it.
	BatchID string
	// At is when the request was accepted (for the oldest age).
	At time.Time
}

// Config configures a Backlog. Zero values take defaults.
type Config struct {
	// Prefix of the keys (default "cropq:"): lists at
	// Prefix+"backlog:{lane:tenant}" (one Cluster slot each), the set of
	// lists that may hold entries at Prefix+"backlog:active".
	Prefix string
	// Lanes in strict order (default urgent, normal, backfill).
	Lanes []string
}

// Backlog is safe for concurrent use.
type Backlog struct {
	rdb redis.UniversalClient
	cfg Config
}

// DefaultLanes are the priorities, highest first (tasks.Priorities).
var DefaultLanes = tasks.Priorities

// New returns the backlog on rdb, which the caller owns.
func New(rdb redis.UniversalClient, cfg Config) *Backlog {
	if cfg.Prefix == "" {
		cfg.Prefix = status.DefaultPrefix
	}
	if len(cfg.Lanes) == 0 {
		cfg.Lanes = DefaultLanes
	}
	return &Backlog{rdb: rdb, cfg: cfg}
}

// Lanes lists the lanes, highest first.
func (b *Backlog) Lanes() []string { return append([]string(nil), b.cfg.Lanes...) }

// ListKey is the list of (lane, tenant).
func (b *Backlog) ListKey(lane, tenant string) string {
	return rediskey.Prefix(b.cfg.Prefix).Backlog(lane, tenant)
}

// ActiveKey is the set of "lane:tenant" members whose lists may hold
// entries (a list may be empty; one that holds entries is always in it).
func (b *Backlog) ActiveKey() string { return rediskey.Prefix(b.cfg.Prefix).BacklogActive() }

// Member is the ActiveKey member of (lane, tenant).
func Member(lane, tenant string) string { return lane + ":" + tenant }

func splitMember(m string) (lane, tenant string, ok bool) {
	return strings.Cut(m, ":")
}

// Encode is e as stored: "millis id\n" then the payload, so that the head's
// request id and age are read without decoding the payload. An id-only
// entry of a batch stores "#" and the batch id in place of the payload (a
// payload is a JSON object: it never starts with "#").
func Encode(e Entry) []byte {
	head := strconv.FormatInt(e.At.UnixMilli(), 10) + " " + e.RequestID + "\n"
	if len(e.Payload) == 0 && e.BatchID != "" {
		return append([]byte(head), "#"+e.BatchID...)
	}
	return append([]byte(head), e.Payload...)
}

// idOnly reports whether payload, as stored, is an id-only entry's, and
// the batch it names (empty for none, or an entry written before entries
// named it).
func idOnly(payload []byte) (batchID string, ok bool) {
	if len(payload) == 0 {
		return "", true
	}
	if payload[0] == '#' {
		return string(payload[1:]), true
	}
	return "", false
}

// decode splits a stored entry.
func decode(raw string) (at time.Time, id, payload string, err error) {
	head, payload, ok := strings.Cut(raw, "\n")
	ms, id, ok2 := strings.Cut(head, " ")
	n, perr := strconv.ParseInt(ms, 10, 64)
	if !ok || !ok2 || perr != nil || id == "" {
		return time.Time{}, "", "", errors.New("backlog: malformed entry")
	}
	return time.UnixMilli(n), id, payload, nil
}

// Push appends entries to their lists, in order, in one round trip.
// Producers that must create a record in the same step use status's
// create script with AppendTo instead.
func (b *Backlog) Push(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	// The entries first, then the set: the feeder removes a list from the
	// set only when it is empty, so a list with entries is always found.
	// (A Cluster pipeline sends each node's commands on its own: one round
	// trip could add the member before the entry lands.)
	pipe := b.rdb.Pipeline()
	for _, e := range entries {
		pipe.RPush(ctx, b.ListKey(e.Lane, e.Tenant), Encode(e))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("backlog: push: %w", err)
	}
	pipe = b.rdb.Pipeline()
	for _, e := range entries {
		pipe.SAdd(ctx, b.ActiveKey(), Member(e.Lane, e.Tenant))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("backlog: push: %w", err)
	}
	return nil
}

// Stat is the backlog of one (lane, tenant).
type Stat struct {
	Lane   string    `json:"lane"`
	Tenant string    `json:"tenant"`
	Len    int64     `json:"length"`
	Oldest time.Time `json:"oldest,omitzero"` // when its oldest entry was accepted
}

// MetricStats is Stats as package metrics exports them
// (metrics.RegisterBacklog's reader).
func (b *Backlog) MetricStats(ctx context.Context) ([]metrics.BacklogStat, error) {
	stats, err := b.Stats(ctx)
	out := make([]metrics.BacklogStat, len(stats))
	for i, s := range stats {
		out[i] = metrics.BacklogStat{Lane: s.Lane, Tenant: s.Tenant, Len: s.Len, Oldest: s.Oldest}
	}
	return out, err
}

// Stats returns the non-empty backlogs, lanes in order.
func (b *Backlog) Stats(ctx context.Context) ([]Stat, error) {
	members, err := b.rdb.SMembers(ctx, b.ActiveKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("backlog: stats: %w", err)
	}
	pipe := b.rdb.Pipeline()
	type q struct {
		lane, tenant string
		n            *redis.IntCmd
		head         *redis.StringCmd
	}
	var qs []q
	for _, m := range members {
		lane, tenant, ok := splitMember(m)
		if !ok {
			continue
		}
		key := b.ListKey(lane, tenant)
		qs = append(qs, q{lane, tenant, pipe.LLen(ctx, key), pipe.LIndex(ctx, key, 0)})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("backlog: stats: %w", err)
	}
	var out []Stat
	for _, lane := range b.cfg.Lanes {
		for _, x := range qs {
			if x.lane != lane || x.n.Val() == 0 {
				continue
			}
			st := Stat{Lane: lane, Tenant: x.tenant, Len: x.n.Val()}
			if at, _, _, err := decode(x.head.Val()); err == nil {
				st.Oldest = at
			}
			out = append(out, st)
		}
	}
	return out, nil
}

// Size is the total number of entries waiting.
func (b *Backlog) Size(ctx context.Context) (int64, error) {
	st, err := b.Stats(ctx)
	var n int64
	for _, s := range st {
		n += s.Len
	}
	return n, err
}
