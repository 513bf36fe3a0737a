package records

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Create writes rec as a new "queued" record unless one exists already; it
// returns the record that is there after the call and whether it was created.
func (s *Store) Create(ctx context.Context, rec status.Record) (status.Record, bool, error) {
	res, err := s.CreateMany(ctx, []status.Record{rec})
	if err != nil {
		return status.Record{}, false, err
	}
	return res[0].Record, res[0].Created, res[0].Err
}

// Created is the outcome of one record of CreateMany.
type Created struct {
	Record  status.Record // the new record, or the one that was there
	Created bool
	Err     error
}

// CreateMany creates records as Create does, in two pipelined round trips
// whatever their number: one to create, one to read those that existed.
func (s *Store) CreateMany(ctx context.Context, recs []status.Record) ([]Created, error) {
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
func (s *Store) CreateManyAppend(ctx context.Context, recs []status.Record, appends []Append) ([]Created, error) {
	now := s.cfg.Now().UTC()
	out := make([]Created, len(recs))
	encoded := make([][]byte, len(recs))
	for i, rec := range recs {
		// A queued record is stored lean (a backlog of millions waits in
		// Redis): its update time and first history entry are its creation,
		// filled in again when it is read.
		rec.State = status.Queued
		rec.CreatedAt, rec.UpdatedAt, rec.History = now, time.Time{}, nil
		b, err := json.Marshal(rec)
		if err != nil {
			out[i].Err = fmt.Errorf("status: encode %s: %w", rec.RequestID, err)
			continue
		}
		out[i].Record, encoded[i] = filled(rec), b
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
			keys := make([]string, 0, 3*len(g.idx)+nBatchKeys+1)
			args := make([]any, 0, 3*len(g.idx)+6)
			keys = append(keys, s.batchKeys(recs[g.idx[0]].Tenant, g.batchID)...)
			keys = append(keys, s.BatchesKey())
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
func (s *Store) readExisting(ctx context.Context, recs []status.Record, existing []int, out []Created) ([]Created, error) {
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
		var r status.Record
		if err := json.Unmarshal(b, &r); err != nil {
			out[i].Err = fmt.Errorf("status: decode %s: %w", recs[i].RequestID, err)
			continue
		}
		out[i].Record = filled(r)
	}
	return out, nil
}

// createManyCluster creates records on a Redis Cluster: SET NX per record
// (the client sends each to its slot's node), then the batch counts.
func (s *Store) createManyCluster(ctx context.Context, recs []status.Record, encoded [][]byte, appends []Append, out []Created) ([]Created, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.BoolCmd, len(recs))
	for i, rec := range recs {
		if encoded[i] != nil {
			cmds[i] = pipe.SetNX(ctx, s.Key(rec.RequestID), encoded[i], 0) // waiting: no TTL
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("status: create: %w", err)
	}
	batches := map[string]int64{}
	batchPriority := map[string]string{}
	settles := map[string][2]string{} // batch key → tenant, batch id
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
				settles[bk] = [2]string{recs[i].Tenant, recs[i].BatchID}
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
			pipe.HIncrBy(ctx, id, string(status.Queued), n)
			if p := batchPriority[id]; p != "" {
				// A close race may keep the higher lane: the estimate is then early.
				if cur, err := s.rdb.HGet(ctx, id, "priority").Result(); err != nil || laneRank[p] > laneRank[cur] {
					pipe.HSet(ctx, id, "priority", p)
				}
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("status: count batch: %w", err)
		}
		if err := s.indexCreatedCluster(ctx, recs, out); err != nil {
			return nil, err
		}
		for _, b := range settles {
			if err := s.settle(ctx, b[0], b[1]); err != nil {
				return nil, err
			}
		}
	}
	return s.readExisting(ctx, recs, existing, out)
}

// createScript sets each record (KEYS[13], KEYS[16], … with ARGV[7],
// ARGV[10], …) if absent, without a TTL (a waiting request never expires),
// and, for each it created, appends its entry (ARGV[8], …, when not empty)
// to its list (KEYS[14], …) and adds ARGV[9] to the set KEYS[15]; it
// counts those it created in their batch (KEYS[1..11], batchKeys) when
// ARGV[2] is 1, keeping the lowest lane its requests were in (ARGV[3]: the
// batch is done when its slowest part is), and returns a 1 or 0 per record.
// The batch index (batchindex.go): each record created in a batch gets its
// id (from ARGV[6]+1 in its key) appended to KEYS[2], its place there in
// its batchSeq field and its bit set in the queued bitmap KEYS[4]; the
// batch ARGV[5] enters the registry KEYS[12] at ARGV[4]. A batch that
// gets requests keeps no TTL (settle; ARGV[1] is the TTL).
var createScript = redis.NewScript(settleLua + "local rank = " + laneRankLua() + `
local created, n, added = {}, 0, {}
for i = 13, #KEYS, 3 do
  local a = i - 6
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local rec = ARGV[a]
    if ARGV[2] == '1' then
      local seq = redis.call('RPUSH', KEYS[2], string.sub(KEYS[i], ARGV[6] + 0, -2))
      redis.call('SETBIT', KEYS[4], seq - 1, 1)
      rec = string.sub(rec, 1, -2) .. ',"batchSeq":' .. seq .. '}'
    end
    redis.call('SET', KEYS[i], rec)
    created[#created + 1] = 1
    n = n + 1
    if ARGV[a + 1] ~= '' then
      redis.call('RPUSH', KEYS[i + 1], ARGV[a + 1])
      -- Once per list and call: a batch's requests share one or a few.
      if not added[ARGV[a + 2]] then
        redis.call('SADD', KEYS[i + 2], ARGV[a + 2])
        added[ARGV[a + 2]] = true
      end
    end
  else
    created[#created + 1] = 0
  end
end
if ARGV[2] == '1' and n > 0 then
  redis.call('HINCRBY', KEYS[1], 'queued', n)
  if ARGV[3] ~= '' then
    local cur = redis.call('HGET', KEYS[1], 'priority')
    if not cur or (rank[ARGV[3]] or 0) > (rank[cur] or 0) then redis.call('HSET', KEYS[1], 'priority', ARGV[3]) end
  end
  settle(1, ARGV[1])
  redis.call('ZADD', KEYS[12], 'NX', ARGV[4], ARGV[5])
end
return created
`)

// laneRank orders the priorities (tasks.Priorities: the lanes are listed
// there alone), highest first: 1, 2, …
var laneRank = func() map[string]int {
	m := make(map[string]int, len(tasks.Priorities))
	for i, p := range tasks.Priorities {
		m[p] = i + 1
	}
	return m
}()

// laneRankLua is laneRank as a Lua table, for the scripts.
func laneRankLua() string {
	parts := make([]string, len(tasks.Priorities))
	for i, p := range tasks.Priorities {
		parts[i] = fmt.Sprintf("[%q] = %d", p, i+1)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// lowestLane is the lowest priority among recs[idx].
func lowestLane(recs []status.Record, idx []int) string {
	low := ""
	for _, i := range idx {
		if p := recs[i].Priority; laneRank[p] > laneRank[low] {
			low = p
		}
	}
	return low
}

// Undo removes a queued record this caller created, and its count in its
// batch: the undo of a Create whose next step (the enqueue) failed, so
// that batch counts always equal the records that exist. A record that
// moved on meanwhile (the enqueue did happen after all, and a worker took
// it) is left alone.
func (s *Store) Undo(ctx context.Context, rec status.Record) error {
	hasBatch := "0"
	if rec.BatchID != "" {
		hasBatch = "1"
	}
	key, bk := s.Key(rec.RequestID), s.batchKey(rec.Tenant, rec.BatchID)
	if !s.cluster {
		keys := append([]string{key}, s.batchKeys(rec.Tenant, rec.BatchID)...)
		if err := undoScript.Run(ctx, s.rdb, keys, hasBatch, s.cfg.TTL.Milliseconds()).Err(); err != nil {
			return fmt.Errorf("status: undo %s: %w", rec.RequestID, err)
		}
		return nil
	}
	// Other slots: a check, then the two writes (a worker slipping in
	// between is as unlikely as it is harmless: it recreates the record).
	cur, err := s.Get(ctx, rec.RequestID)
	switch {
	case errors.Is(err, status.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("status: undo %s: %w", rec.RequestID, err)
	case cur.State != status.Queued || cur.Attempt != 0:
		return nil
	}
	pipe := s.rdb.Pipeline()
	pipe.Del(ctx, key)
	if rec.BatchID != "" {
		pipe.HIncrBy(ctx, bk, string(status.Queued), -1)
		if cur.BatchSeq > 0 {
			pipe.SetBit(ctx, s.indexKey(rec.Tenant, rec.BatchID, status.Queued), cur.BatchSeq-1, 0)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("status: undo %s: %w", rec.RequestID, err)
	}
	if rec.BatchID != "" {
		return s.settle(ctx, rec.Tenant, rec.BatchID)
	}
	return nil
}

// undoScript deletes KEYS[1] only while it is queued and unattempted, and
// then counts it out of its batch (KEYS[2..12], batchKeys: the counts, and
// the queued bitmap KEYS[5]) when ARGV[1] is 1, settling the batch's TTL
// (ARGV[2] ms) as a request that finished would.
var undoScript = redis.NewScript(settleLua + `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local r = cjson.decode(v)
if r.state ~= 'queued' or (r.attempt or 0) ~= 0 then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[1] == '1' then
  redis.call('HINCRBY', KEYS[2], 'queued', -1)
  if r.batchSeq then redis.call('SETBIT', KEYS[5], r.batchSeq - 1, 0) end
  settle(2, ARGV[2])
end
return 1
`)
