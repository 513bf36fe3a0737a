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
// then. A batch's keys (batchKeys, its report's list among them) live
// without a TTL while any of its requests waits, while its manifest is
// being read (ReadingField) and while its report is due in S3 and not yet
// written (ReportField without ReportWrittenField or ReportErrorField), and
// get Config.TTL, counted from then, when none of that holds (settleLua). A
// backlog of any age therefore keeps every record and batch it holds;
// Redis memory, not the TTL, bounds it. A batch's report outlives the
// records it names: a record's TTL runs from its own end, the report's
// from its batch's.

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
const nBatchKeys = 3 + 7 + 1

// batchKeys are every key of a tenant's batch: its counts, its list of
// request ids, its paid calls, one bitmap per state of batchStates, then
// its report's list (ReportKey). They share the batch's hash tag (one
// Cluster slot) and expire together.
func (s *Store) batchKeys(tenant, batchID string) []string {
	keys := make([]string, 0, nBatchKeys)
	keys = append(keys, s.batchKey(tenant, batchID), s.idsKey(tenant, batchID), s.paidKey(tenant, batchID))
	for _, st := range batchStates {
		keys = append(keys, s.indexKey(tenant, batchID, st))
	}
	return append(keys, s.ReportKey(tenant, batchID))
}

// settleLua is a Lua function the batch scripts share: settle(base, ttl)
// sums the waiting counts of the batch whose keys (batchKeys) start at
// KEYS[base], and removes the TTL of every one of its keys while a
// request waits, its manifest is read or its report is due, or sets it to
// ttl ms once none of that holds. It returns the number waiting, and
// whether the batch is done with a report due in S3 (ReportsDueKey).
const settleLua = `
local function settle(base, ttl)
  local c = redis.call('HMGET', KEYS[base], 'queued', 'running', 'retrying', 'cropped', 'reading', 'report', 'reportWritten', 'reportError')
  local waiting = 0
  for i = 1, 4 do waiting = waiting + (tonumber(c[i]) or 0) end
  local due = waiting == 0 and not c[5] and c[6] and not c[7] and not c[8]
  local open = waiting > 0 or c[5] or due
  for i = base, base + 10 do
    if open then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ttl) end
  end
  return waiting, due and 1 or 0
end
`

// settleScript settles the batch of KEYS[1..11] (batchKeys) with the TTL
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

// moveScript moves a request of a batch (KEYS[1..11], batchKeys) from the
// state ARGV[2] ("" when it was not counted) to ARGV[3]: its count and its
// bit at the place ARGV[4] (0: none); ARGV[5] = "1" counts a saved call
// (and ARGV[10] = "1" an unchanged destination),
// ARGV[6] adds paid calls; ARGV[9], when not empty, is the request's
// report line (a terminal move), appended to the report's list KEYS[11]
// in the same step, so that counts and report never part. Then the batch
// is settled with the TTL ARGV[1]. ARGV[6] is negative when a failed
// request is replayed: its paid calls are taken back, and it adds them all
// again when it ends.
//
// ARGV[8] = "1" is a record written again after Redis lost it (ARGV[7] is
// its request id): its place is looked up in the batch's list of ids, and
// the state its bit is in there stands for ARGV[2]; a request the list
// does not hold (the index was lost with it) is appended, and counted as
// new. It returns the request's place (0: none) and 1 when the batch is
// now done with its report due (settle).
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
if ARGV[10] == '1' then redis.call('HINCRBY', KEYS[1], 'unchanged', 1) end
if tonumber(ARGV[6]) ~= 0 then redis.call('INCRBY', KEYS[3], ARGV[6]) end
if ARGV[9] ~= '' and from ~= to then redis.call('RPUSH', KEYS[11], ARGV[9]) end
local _, due = settle(1, ARGV[1])
return {seq, due}
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
	var line []byte
	switch {
	case rec.State.Terminal():
		paid = rec.PaidCalls
		line = reportLineOf(rec)
	case from == status.Failed:
		paid = -rec.PaidCalls // replayed: counted again when it ends
	}
	if lost {
		again, from = "1", ""
	}
	return moveScript.Eval(ctx, p, s.batchKeys(rec.Tenant, rec.BatchID),
		s.cfg.TTL.Milliseconds(), string(from), string(rec.State), rec.BatchSeq, saved, paid, rec.RequestID, again, line, unchanged)
}

// placed writes a place the batch index gave a record written again into
// it (see moveScript), unless it has one.
func (s *Store) placed(ctx context.Context, id string, seq int64) error {
	if err := placeScript.Run(ctx, s.rdb, []string{s.Key(id)}, seq).Err(); err != nil {
		return fmt.Errorf("status: place %s in its batch: %w", id, err)
	}
	return nil
}
