// Package status keeps one record per crop request id in Redis: its state,
// attempts, the API's checkpoint (result URL and expiry) and where the result
// was stored, with a bounded history of transitions.
//
// Transitions are atomic (optimistic WATCH/MULTI on the record's key) and
// ordered: an update from an attempt older than the record's is refused with
// ErrStaleAttempt, and terminal states never move. On a single Redis the
// same transaction keeps the per-batch counts and appends terminal
// transitions to the events stream, so a pipeline reading the stream misses
// nothing. On a Redis Cluster those keys live in other slots, so they are
// written right after the record's transaction: a crash in between can miss
// one count or event, never a record.
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

// Record is the status of one request id.
type Record struct {
	RequestID string    `json:"requestId"`
	State     State     `json:"state"`
	Attempt   int       `json:"attempt"` // 1-based; 0 while queued
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"` // stored only once it differs from CreatedAt

	// What was asked, so a repeated id can be told apart from a new request.
	TargetWidth  int    `json:"targetWidth,omitempty"`
	TargetHeight int    `json:"targetHeight,omitempty"`
	Source       string `json:"source,omitempty"` // "url" or "base64"
	SourceURL    string `json:"sourceUrl,omitempty"`
	SourceDigest string `json:"sourceDigest,omitempty"` // sha256 of a base64 image's bytes
	CallbackURL  string `json:"callbackUrl,omitempty"`
	BatchID      string `json:"batchId,omitempty"`
	Bucket       string `json:"bucket,omitempty"`
	KeyTemplate  string `json:"keyTemplate,omitempty"`
	// Metadata is stored with the result object.
	Metadata map[string]string `json:"metadata,omitempty"`
	// Tenant and Priority place the request in the backlog's lanes and
	// shares (their defaults filled in).
	Tenant   string `json:"tenant,omitempty"`
	Priority string `json:"priority,omitempty"`
	// Fingerprint covers every parameter of the request (tasks.Request's
	// Fingerprint): the same id with any other parameter is a conflict.
	Fingerprint string `json:"fingerprint,omitempty"`
	// BatchSeq is the record's 1-based place in its batch's index
	// (batchindex.go); 0 when it is in none.
	BatchSeq int64 `json:"batchSeq,omitempty"`

	ErrorCode    string `json:"errorCode,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`

	// Checkpoint of the paid API call: reused by later attempts until it expires.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// PaidCalls and Usage add up every successful API call for this id.
	PaidCalls int `json:"paidCalls"`
	Usage     int `json:"usage"`
	// ExpiredRecrops counts paid calls made because an earlier result URL
	// expired before it could be copied (an S3 outage longer than its life).
	ExpiredRecrops int `json:"expiredRecrops,omitempty"`

	Stored *Stored `json:"stored,omitempty"`

	History []Transition `json:"history,omitempty"`

	// Task is the asynq task that owns the request once a rescue (package
	// lease) handed it to a task of its own; empty, the request's own task
	// owns it. Updates from any other task are refused as stale.
	Task string `json:"task,omitempty"`
	// ReusedFrom names the request whose stored result this one reused
	// (package dedup): copied, not paid for.
	ReusedFrom string `json:"reusedFrom,omitempty"`
}

// filled is r with what a lean queued record leaves out: its update time
// and the first entry of its history are its creation.
func (r Record) filled() Record {
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = r.CreatedAt
	}
	if len(r.History) == 0 && !r.CreatedAt.IsZero() {
		r.History = []Transition{{State: Queued, At: r.CreatedAt}}
	}
	return r
}

// Checkpoint is a successful API answer whose result is not yet stored.
type Checkpoint struct {
	ResultURL string    `json:"resultUrl"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"` // on the vendor's clock
	// Lifetime is how long the URL lived from the answer, by the vendor's
	// clock (cropapi.Result.Lifetime).
	Lifetime     time.Duration `json:"lifetimeNs,omitempty"`
	Width        int           `json:"width"`
	Height       int           `json:"height"`
	APIRequestID string        `json:"apiRequestId,omitempty"`
	TraceID      string        `json:"traceId,omitempty"`
}

// Usable reports whether the checkpoint has a result URL to try. Whether
// it still lives is the vendor's to say: a worker's clock may be off by
// more than the URL's life, and a refused download is cheap where a paid
// call is not, so the download is tried and an expired answer (403) leads
// to a new crop.
func (c *Checkpoint) Usable() bool { return c != nil && c.ResultURL != "" }

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

	// Task is the asynq task making the change; when set, it must own the
	// request (Record.Task), or take it over through Takeover.
	Task string
	// Takeover, on a rescued task's move to Running, takes the request from
	// the task it rescued, unless that task (or any other) has moved on
	// past the attempt that was rescued.
	Takeover *Takeover
	// ReusedFrom, with Stored, records that the result was reused from
	// that request's (no paid call).
	ReusedFrom string
}

// Takeover names what a rescue task replaces: the task whose lease expired
// and the attempt it was running.
type Takeover struct {
	From    string
	Attempt int
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

// Defaults of Config. DefaultPrefix is every cropq key's prefix: the other
// packages that keep keys (backlog, quota, lease, dedup) are given the same
// prefix by their callers.
const (
	DefaultPrefix = "cropq:"
	DefaultTTL    = 7 * 24 * time.Hour
)

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
	// EventsMaxLen bounds the events stream (Prefix+"events"), approximately
	// (default 100,000 entries).
	EventsMaxLen int64
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Store reads and writes status records.
type Store struct {
	rdb     redis.UniversalClient
	cfg     Config
	cluster bool // keys of several slots cannot share a transaction
}

// NewStore returns a store on rdb.
func NewStore(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
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
	return r.filled(), nil
}

// Create writes rec as a new "queued" record unless one exists already; it
// returns the record that is there after the call and whether it was created.
func (s *Store) Create(ctx context.Context, rec Record) (Record, bool, error) {
	res, err := s.CreateMany(ctx, []Record{rec})
	if err != nil {
		return Record{}, false, err
	}
	return res[0].Record, res[0].Created, res[0].Err
}

// Created is the outcome of one record of CreateMany.
type Created struct {
	Record  Record // the new record, or the one that was there
	Created bool
	Err     error
}

// CreateMany creates records as Create does, in two pipelined round trips
// whatever their number: one to create, one to read those that existed.
func (s *Store) CreateMany(ctx context.Context, recs []Record) ([]Created, error) {
	return s.CreateManyAppend(ctx, recs, nil)
}

// Append is what a new record brings along in the same step: Value is
// appended to the list List, and Member added to the set Set (a backlog
// entry and its list's place in the active set).
type Append struct {
	List   string
	Value  []byte
	Set    string
	Member string
}

// CreateManyAppend is CreateMany, and for each record created, appends[i]
// (when appends is not nil) is applied in the same script: on one Redis
// primary a request is recorded and queued together or not at all. On a
// Redis Cluster the appends follow the records (a crash in between leaves a
// queued record without its entry; submitting the request again repairs
// it).
func (s *Store) CreateManyAppend(ctx context.Context, recs []Record, appends []Append) ([]Created, error) {
	now := s.cfg.Now().UTC()
	out := make([]Created, len(recs))
	encoded := make([][]byte, len(recs))
	for i, rec := range recs {
		// A queued record is stored lean (a backlog of millions waits in
		// Redis): its update time and first history entry are its creation,
		// filled in again when it is read.
		rec.State = Queued
		rec.CreatedAt, rec.UpdatedAt, rec.History = now, time.Time{}, nil
		b, err := json.Marshal(rec)
		if err != nil {
			out[i].Err = fmt.Errorf("status: encode %s: %w", rec.RequestID, err)
			continue
		}
		out[i].Record, encoded[i] = rec.filled(), b
	}
	if s.cluster {
		return s.createManyCluster(ctx, recs, encoded, appends, out)
	}
	app := func(i int) Append {
		if appends == nil {
			return Append{}
		}
		return appends[i]
	}
	// One script call per batch id (and per 1,000 records): Lua's per-call
	// cost is paid once, and a batch's count moves with its records.
	type group struct {
		batchID, key string
		idx          []int
	}
	var groups []*group
	byBatch := map[string]*group{}
	for i, rec := range recs {
		if encoded[i] == nil {
			continue
		}
		bk := s.batchKey(rec.Tenant, rec.BatchID)
		g := byBatch[bk]
		if g == nil || len(g.idx) >= 1000 {
			g = &group{batchID: rec.BatchID, key: bk}
			byBatch[bk] = g
			groups = append(groups, g)
		}
		g.idx = append(g.idx, i)
	}
	var cmds []*redis.Cmd
	for try := 0; ; try++ {
		pipe := s.rdb.Pipeline()
		cmds = make([]*redis.Cmd, len(groups))
		for j, g := range groups {
			keys := make([]string, 0, 3*len(g.idx)+3)
			args := make([]any, 0, 3*len(g.idx)+6)
			keys = append(keys, g.key, s.idsKey(recs[g.idx[0]].Tenant, g.batchID), s.indexKey(recs[g.idx[0]].Tenant, g.batchID, Queued), s.BatchesKey())
			args = append(args, s.cfg.TTL.Milliseconds(), g.batchID != "", lowestLane(recs, g.idx),
				now.UnixMilli(), batchMember(recs[g.idx[0]].Tenant, g.batchID), len(s.Key(""))) // the batch index (batchindex.go)
			for _, i := range g.idx {
				a := app(i)
				list, set := a.List, a.Set
				if list == "" {
					// Unused, but declared: the script's keys come in threes.
					list, set = s.Key(recs[i].RequestID), s.Key(recs[i].RequestID)
				}
				keys = append(keys, s.Key(recs[i].RequestID), list, set)
				args = append(args, encoded[i], a.Value, a.Member)
			}
			cmds[j] = createScript.EvalSha(ctx, pipe, keys, args...)
		}
		_, err := pipe.Exec(ctx)
		if err == nil {
			break
		}
		// A fresh server does not know the script yet: load it once.
		if try == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if lerr := createScript.Load(ctx, s.rdb).Err(); lerr != nil {
				return nil, fmt.Errorf("status: load script: %w", lerr)
			}
			continue
		}
		return nil, fmt.Errorf("status: create: %w", err)
	}
	var existing []int
	for j, g := range groups {
		flags, err := cmds[j].Int64Slice()
		if err != nil || len(flags) != len(g.idx) {
			return nil, fmt.Errorf("status: create: unexpected reply %v: %w", cmds[j].Val(), err)
		}
		for k, i := range g.idx {
			if flags[k] == 1 {
				out[i].Created = true
			} else {
				existing = append(existing, i)
			}
		}
	}
	return s.readExisting(ctx, recs, existing, out)
}

// readExisting fills out with the records that were already there.
func (s *Store) readExisting(ctx context.Context, recs []Record, existing []int, out []Created) ([]Created, error) {
	if len(existing) == 0 {
		return out, nil
	}
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(existing))
	for j, i := range existing {
		gets[j] = pipe.Get(ctx, s.Key(recs[i].RequestID))
	}
	_, _ = pipe.Exec(ctx)
	for j, i := range existing {
		b, err := gets[j].Bytes()
		if err != nil {
			// Expired or deleted in between: report it rather than guess.
			out[i].Err = fmt.Errorf("status: read existing %s: %w", recs[i].RequestID, err)
			continue
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			out[i].Err = fmt.Errorf("status: decode %s: %w", recs[i].RequestID, err)
			continue
		}
		out[i].Record = r.filled()
	}
	return out, nil
}

// createManyCluster creates records on a Redis Cluster: SET NX per record
// (the client sends each to its slot's node), then the batch counts.
func (s *Store) createManyCluster(ctx context.Context, recs []Record, encoded [][]byte, appends []Append, out []Created) ([]Created, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.BoolCmd, len(recs))
	for i, rec := range recs {
		if encoded[i] != nil {
			cmds[i] = pipe.SetNX(ctx, s.Key(rec.RequestID), encoded[i], s.cfg.TTL)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("status: create: %w", err)
	}
	batches := map[string]int64{}
	batchPriority := map[string]string{}
	var existing []int
	apipe := s.rdb.Pipeline()
	napp := 0
	for i, c := range cmds {
		switch {
		case c == nil:
		case c.Val():
			out[i].Created = true
			if recs[i].BatchID != "" {
				bk := s.batchKey(recs[i].Tenant, recs[i].BatchID)
				batches[bk]++
				if laneRank[recs[i].Priority] > laneRank[batchPriority[bk]] {
					batchPriority[bk] = recs[i].Priority
				}
			}
			if appends != nil && appends[i].List != "" {
				apipe.RPush(ctx, appends[i].List, appends[i].Value)
				napp++
			}
		default:
			existing = append(existing, i)
		}
	}
	if napp > 0 {
		_, err := apipe.Exec(ctx)
		if err == nil {
			// The set after the lists (each node's commands go on their own):
			// a member must not be there before its entry.
			spipe := s.rdb.Pipeline()
			for i := range out {
				if out[i].Created && appends[i].List != "" {
					spipe.SAdd(ctx, appends[i].Set, appends[i].Member)
				}
			}
			_, err = spipe.Exec(ctx)
		}
		if err != nil {
			// Undo the records this call made, so that nothing is half-done.
			undo := s.rdb.Pipeline()
			for i := range out {
				if out[i].Created {
					undo.Del(context.WithoutCancel(ctx), s.Key(recs[i].RequestID))
				}
			}
			_, uerr := undo.Exec(context.WithoutCancel(ctx))
			return nil, errors.Join(fmt.Errorf("status: append: %w", err), uerr)
		}
	}
	if len(batches) > 0 {
		pipe := s.rdb.Pipeline()
		for id, n := range batches {
			pipe.HIncrBy(ctx, id, string(Queued), n)
			if p := batchPriority[id]; p != "" {
				// A close race may keep the higher lane: the estimate is then early.
				if cur, err := s.rdb.HGet(ctx, id, "priority").Result(); err != nil || laneRank[p] > laneRank[cur] {
					pipe.HSet(ctx, id, "priority", p)
				}
			}
			pipe.PExpire(ctx, id, s.cfg.TTL)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("status: count batch: %w", err)
		}
		if err := s.indexCreatedCluster(ctx, recs, out); err != nil {
			return nil, err
		}
	}
	return s.readExisting(ctx, recs, existing, out)
}

// createScript sets each record (KEYS[5], KEYS[8], … with ARGV[7],
// ARGV[10], …) if absent and, for each it created, appends its entry
// (ARGV[8], …, when not empty) to its list (KEYS[6], …) and adds ARGV[9] to
// the set KEYS[7]; it counts those it created in their batch (KEYS[1]) when
// ARGV[2] is 1, keeping the lowest lane its requests were in (ARGV[3]: the
// batch is done when its slowest part is), and returns a 1 or 0 per record.
// The batch index (batchindex.go): each record created in a batch gets its
// id (from ARGV[6]+1 in its key) appended to KEYS[2], its place there in
// its batchSeq field and its bit set in the queued bitmap KEYS[3]; the
// batch ARGV[5] enters the registry KEYS[4] at ARGV[4].
var createScript = redis.NewScript(`
local created, n = {}, 0
for i = 5, #KEYS, 3 do
  local a = i + 2
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local rec = ARGV[a]
    if ARGV[2] == '1' then
      local seq = redis.call('RPUSH', KEYS[2], string.sub(KEYS[i], ARGV[6] + 0, -2))
      redis.call('SETBIT', KEYS[3], seq - 1, 1)
      rec = string.sub(rec, 1, -2) .. ',"batchSeq":' .. seq .. '}'
    end
    redis.call('SET', KEYS[i], rec, 'PX', ARGV[1])
    created[#created + 1] = 1
    n = n + 1
    if ARGV[a + 1] ~= '' then
      redis.call('RPUSH', KEYS[i + 1], ARGV[a + 1])
      redis.call('SADD', KEYS[i + 2], ARGV[a + 2])
    end
  else
    created[#created + 1] = 0
  end
end
if ARGV[2] == '1' and n > 0 then
  redis.call('HINCRBY', KEYS[1], 'queued', n)
  if ARGV[3] ~= '' then
    local rank = {urgent = 1, normal = 2, backfill = 3}
    local cur = redis.call('HGET', KEYS[1], 'priority')
    if not cur or (rank[ARGV[3]] or 0) > (rank[cur] or 0) then redis.call('HSET', KEYS[1], 'priority', ARGV[3]) end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[5])
end
return created
`)

// laneRank orders the priorities, highest first.
var laneRank = map[string]int{"urgent": 1, "normal": 2, "backfill": 3}

// lowestLane is the lowest priority among recs[idx].
func lowestLane(recs []Record, idx []int) string {
	low := ""
	for _, i := range idx {
		if p := recs[i].Priority; laneRank[p] > laneRank[low] {
			low = p
		}
	}
	return low
}

// batchKey is the counts of a tenant's batch: batch ids are the tenant's
// own, so two tenants' batches of one name are two batches. The default
// tenant's keep the key they had before tenants existed.
func (s *Store) batchKey(tenant, batchID string) string {
	if tenant == "" || tenant == "default" {
		return s.cfg.Prefix + "batch:{" + batchID + "}"
	}
	return s.cfg.Prefix + "batch:{" + tenant + "/" + batchID + "}"
}

// EventsKey is the Redis stream terminal transitions are appended to.
func (s *Store) EventsKey() string { return s.cfg.Prefix + "events" }

// BatchCounts returns how many records of the tenant's batchID are in each
// state (an empty map for an unknown batch).
func (s *Store) BatchCounts(ctx context.Context, tenant, batchID string) (map[State]int64, error) {
	counts, _, err := s.Batch(ctx, tenant, batchID)
	return counts, err
}

// Batch returns the counts of a tenant's batch, as BatchCounts, and the
// lowest priority among its requests.
func (s *Store) Batch(ctx context.Context, tenant, batchID string) (counts map[State]int64, priority string, err error) {
	m, err := s.rdb.HGetAll(ctx, s.batchKey(tenant, batchID)).Result()
	if err != nil {
		return nil, "", fmt.Errorf("status: batch %s: %w", batchID, err)
	}
	priority = m["priority"]
	delete(m, "priority")
	delete(m, SavedCount) // not a state: see BatchSaved
	out := make(map[State]int64, len(m))
	for k, v := range m {
		var n int64
		if _, err := fmt.Sscan(v, &n); err == nil && n != 0 {
			out[State(k)] = n
		}
	}
	return out, priority, nil
}

// SavedCount is the field of a batch's counts that tallies its requests
// that reused a stored result instead of paying (package dedup).
const SavedCount = "saved"

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

// Undo removes a queued record this caller created, and its count in its
// batch: the undo of a Create whose next step (the enqueue) failed, so
// that batch counts always equal the records that exist. A record that
// moved on meanwhile (the enqueue did happen after all, and a worker took
// it) is left alone.
func (s *Store) Undo(ctx context.Context, rec Record) error {
	hasBatch := "0"
	if rec.BatchID != "" {
		hasBatch = "1"
	}
	key, bk := s.Key(rec.RequestID), s.batchKey(rec.Tenant, rec.BatchID)
	if !s.cluster {
		if err := undoScript.Run(ctx, s.rdb, []string{key, bk, s.indexKey(rec.Tenant, rec.BatchID, Queued)}, hasBatch).Err(); err != nil {
			return fmt.Errorf("status: undo %s: %w", rec.RequestID, err)
		}
		return nil
	}
	// Other slots: a check, then the two writes (a worker slipping in
	// between is as unlikely as it is harmless: it recreates the record).
	cur, err := s.Get(ctx, rec.RequestID)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("status: undo %s: %w", rec.RequestID, err)
	case cur.State != Queued || cur.Attempt != 0:
		return nil
	}
	pipe := s.rdb.Pipeline()
	pipe.Del(ctx, key)
	if rec.BatchID != "" {
		pipe.HIncrBy(ctx, bk, string(Queued), -1)
		if cur.BatchSeq > 0 {
			pipe.SetBit(ctx, s.indexKey(rec.Tenant, rec.BatchID, Queued), cur.BatchSeq-1, 0)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("status: undo %s: %w", rec.RequestID, err)
	}
	return nil
}

// undoScript deletes KEYS[1] only while it is queued and unattempted, and
// then counts it out of its batch KEYS[2] and its queued bitmap KEYS[3]
// when ARGV[1] is 1.
var undoScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local r = cjson.decode(v)
if r.state ~= 'queued' or (r.attempt or 0) ~= 0 then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[1] == '1' then
  redis.call('HINCRBY', KEYS[2], 'queued', -1)
  if r.batchSeq then redis.call('SETBIT', KEYS[3], r.batchSeq - 1, 0) end
end
return 1
`)

const maxTxRetries = 16

// Transition applies u to id's record atomically and returns the new record.
// A missing record is created when u starts an attempt (To == Running), so a
// task enqueued without a record still gets one. When the move is refused
// with a *TransitionError, the record as it stands is returned with it.
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
			rec = rec.filled()
		}
		from := rec.State
		if err := Apply(&rec, u, s.cfg.Now(), s.cfg.HistoryLimit); err != nil {
			if errors.As(err, new(*TransitionError)) {
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
	return Record{}, fmt.Errorf("status: %s → %s: %w", id, u.To, ErrConflict)
}

// sideEffects queues the batch counts and the event of a transition on p,
// and reports whether it queued anything.
func (s *Store) sideEffects(ctx context.Context, p redis.Pipeliner, rec Record, from State, counted bool) bool {
	any := false
	if rec.BatchID != "" && from != rec.State {
		bk := s.batchKey(rec.Tenant, rec.BatchID)
		if counted {
			p.HIncrBy(ctx, bk, string(from), -1)
		}
		p.HIncrBy(ctx, bk, string(rec.State), 1)
		if rec.State == Succeeded && rec.ReusedFrom != "" {
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

// eventArgs is the stream entry of a terminal transition.
func (s *Store) eventArgs(rec Record) *redis.XAddArgs {
	ev := map[string]any{"requestId": rec.RequestID, "state": string(rec.State), "at": rec.UpdatedAt.Format(time.RFC3339Nano)}
	if rec.BatchID != "" {
		ev["batchId"] = rec.BatchID
	}
	if rec.Stored != nil {
		ev["bucket"], ev["key"] = rec.Stored.Bucket, rec.Stored.Key
	}
	if rec.ErrorCode != "" {
		ev["errorCode"] = rec.ErrorCode
	}
	return &redis.XAddArgs{Stream: s.EventsKey(), MaxLen: s.cfg.EventsMaxLen, Approx: true, Values: ev}
}

// Cancel moves a request that has not started to canceled.
func (s *Store) Cancel(ctx context.Context, id string) (Record, error) {
	return s.Transition(ctx, id, Update{To: Canceled})
}
