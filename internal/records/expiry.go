package records

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/status"
)

// What expires, and when: a record lives without a TTL while its request
// waits (queued, running, retrying, cropped) and gets Config.TTL when it
// reaches a terminal state (succeeded, failed, canceled), counted from
// then. A batch's keys (batchKeys) live without a TTL while any of its
// requests waits, and get Config.TTL, counted from then, when the last one
// finishes (settleLua). A backlog of any age therefore keeps every record
// and batch it holds; Redis memory, not the TTL, bounds it.

// recordTTL is how long a record in state st is kept: 0 (no expiry) while
// its request waits.
func (s *Store) recordTTL(st status.State) int64 {
	if st.Terminal() {
		return s.cfg.TTL.Milliseconds()
	}
	return 0
}

// batchStates orders the per-state bitmaps among batchKeys (and in the
// scripts below).
var batchStates = []status.State{status.Queued, status.Running, status.Retrying, status.Cropped, status.Succeeded, status.Failed, status.Canceled}

// nBatchKeys is len(batchKeys(…)).
const nBatchKeys = 3 + 7

// batchKeys are every key of a tenant's batch: its counts, its list of
// request ids, its paid calls, then one bitmap per state of batchStates.
// They share the batch's hash tag (one Cluster slot) and expire together.
func (s *Store) batchKeys(tenant, batchID string) []string {
	keys := make([]string, 0, nBatchKeys)
	keys = append(keys, s.batchKey(tenant, batchID), s.idsKey(tenant, batchID), s.paidKey(tenant, batchID))
	for _, st := range batchStates {
		keys = append(keys, s.indexKey(tenant, batchID, st))
	}
	return keys
}

// settleLua is a Lua function the batch scripts share: settle(base, ttl)
// sums the waiting counts of the batch whose keys (batchKeys) start at
// KEYS[base], and removes the TTL of every one of its keys while a
// request waits, or sets it to ttl ms once none does. A manifest that
// still has lines to read (ReadingField, "1") counts as one waiting. It
// returns the number waiting.
const settleLua = `
local function settle(base, ttl)
  local c = redis.call('HMGET', KEYS[base], 'queued', 'running', 'retrying', 'cropped', 'reading')
  local waiting = 0
  for _, v in ipairs(c) do waiting = waiting + (tonumber(v) or 0) end
  for i = base, base + 9 do
    if waiting > 0 then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ttl) end
  end
  return waiting
end
`

// settleScript settles the batch of KEYS[1..10] (batchKeys) with the TTL
// ARGV[1] ms: the step a Cluster create or undo runs after its writes.
var settleScript = redis.NewScript(settleLua + `
return settle(1, ARGV[1])
`)

// settle runs settleScript on a tenant's batch.
func (s *Store) settle(ctx context.Context, tenant, batchID string) error {
	if err := settleScript.Run(ctx, s.rdb, s.batchKeys(tenant, batchID), s.cfg.TTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("status: batch %s expiry: %w", batchID, err)
	}
	return nil
}

// moveScript moves a request of a batch (KEYS[1..10], batchKeys) from the
// state ARGV[2] ("" when it was not counted) to ARGV[3]: its count and its
// bit at the place ARGV[4] (0: none); ARGV[5] = "1" counts a saved call
// (and ARGV[9] = "1" an unchanged destination),
// ARGV[6] adds paid calls. Then the batch is settled with the TTL ARGV[1].
//
// ARGV[8] = "1" is a record written again after Redis lost it (ARGV[7] is
// its request id): its place is looked up in the batch's list of ids, and
// the state its bit is in there stands for ARGV[2]; a request the list
// does not hold (the index was lost with it) is appended, and counted as
// new. It returns the request's place (0: none).
var moveScript = redis.NewScript(settleLua + `
local states = {'queued', 'running', 'retrying', 'cropped', 'succeeded', 'failed', 'canceled'}
local bm = {}
for i, s in ipairs(states) do bm[s] = KEYS[3 + i] end
local from, to, seq = ARGV[2], ARGV[3], tonumber(ARGV[4])
if ARGV[8] == '1' then
  from = ''
  local pos = redis.call('LPOS', KEYS[2], ARGV[7])
  if pos then
    seq = pos + 1
    for _, s in ipairs(states) do
      if redis.call('GETBIT', bm[s], pos) == 1 then from = s break end
    end
  else
    seq = redis.call('RPUSH', KEYS[2], ARGV[7])
  end
end
if from ~= '' then
  redis.call('HINCRBY', KEYS[1], from, -1)
  if seq > 0 then redis.call('SETBIT', bm[from], seq - 1, 0) end
end
redis.call('HINCRBY', KEYS[1], to, 1)
if seq > 0 then redis.call('SETBIT', bm[to], seq - 1, 1) end
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'saved', 1) end
if ARGV[9] == '1' then redis.call('HINCRBY', KEYS[1], 'unchanged', 1) end
if tonumber(ARGV[6]) > 0 then redis.call('INCRBY', KEYS[3], ARGV[6]) end
settle(1, ARGV[1])
return seq
`)

// batchMove queues on p the move of rec in its batch from the state from
// ("" when it was not counted), or, when lost, of a record written again.
// The script goes as EVAL, not EVALSHA: inside a transaction a NOSCRIPT
// could not be retried.
func (s *Store) batchMove(ctx context.Context, p redis.Pipeliner, rec status.Record, from status.State, lost bool) *redis.Cmd {
	saved, paid, again, unchanged := "0", 0, "0", "0"
	if rec.State == status.Succeeded && rec.ReusedFrom != "" {
		saved = "1"
	}
	if rec.State == status.Succeeded && rec.Unchanged {
		unchanged = "1"
	}
	if rec.State.Terminal() {
		paid = rec.PaidCalls
	}
	if lost {
		again, from = "1", ""
	}
	return moveScript.Eval(ctx, p, s.batchKeys(rec.Tenant, rec.BatchID),
		s.cfg.TTL.Milliseconds(), string(from), string(rec.State), rec.BatchSeq, saved, paid, rec.RequestID, again, unchanged)
}

// placed writes a place the batch index gave a record written again into
// it (see moveScript), unless it has one.
func (s *Store) placed(ctx context.Context, id string, seq int64) error {
	if err := placeScript.Run(ctx, s.rdb, []string{s.Key(id)}, seq).Err(); err != nil {
		return fmt.Errorf("status: place %s in its batch: %w", id, err)
	}
	return nil
}
