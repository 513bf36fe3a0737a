package records

// A manifest batch is fed from an object in S3 (package manifest reads
// it): what Redis holds of it is a small descriptor, a field of the
// batch's counts hash (so it lives and expires with the batch), never its
// lines. The batches whose manifest is being read are listed in one set
// (ManifestsKey) for the reader to find.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ManifestField is the field of a batch's counts hash holding its
// manifest's descriptor (JSON Manifest).
const ManifestField = "manifest"

// Manifest states.
const (
	ManifestReading = "reading" // lines are left to read
	ManifestDone    = "done"    // read to its end
	ManifestStopped = "stopped" // reading stopped: Code says why
)

// Manifest describes a batch's manifest and how far it was read.
type Manifest struct {
	Tenant  string `json:"tenant"`
	BatchID string `json:"batchId"`
	Bucket  string `json:"bucket"`
	Key     string `json:"key"`
	// ETag and Size are the object's at registration: another version of
	// the object is never read.
	ETag string `json:"etag"`
	Size int64  `json:"size"`
	// Format is jsonl or csv; Header the CSV header line's cells.
	Format string   `json:"format"`
	Header []string `json:"header,omitempty"`
	// Priority is the lane of lines that name none ("" is normal).
	Priority string `json:"priority,omitempty"`
	// Offset is where the next line starts; Line the lines consumed so far
	// (the header of a CSV object is one).
	Offset int64 `json:"offset"`
	Line   int64 `json:"line"`
	// Read counts the request lines read (neither the header nor blank
	// lines).
	Read  int64  `json:"read"`
	State string `json:"state"`
	// Code and Message say why reading stopped.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// Total is the number of request lines, once read to the end.
	Total        int64     `json:"total,omitempty"`
	RegisteredAt time.Time `json:"registeredAt"`
	// Traceparent is the registration's trace context, with tracing on:
	// kept once per batch, and linked from each group of lines read.
	Traceparent string `json:"traceparent,omitempty"`
}

// URL is the manifest's "s3://bucket/key".
func (m Manifest) URL() string { return "s3://" + m.Bucket + "/" + m.Key }

// ManifestsKey is the set of batches ("tenant/batchId") whose manifest is
// being read.
func (s *Store) ManifestsKey() string { return s.keys().Manifests() }

// ErrBatchExists is a batch id registered already with another manifest,
// or used by a batch of requests: a manifest batch needs an id of its own.
var ErrBatchExists = errors.New("the batch exists already with other requests or another manifest")

// RegisterManifest creates a manifest batch: its descriptor, ReadingField
// and ReportField when report is not "" in one step, and its place in
// ManifestsKey and in the batch registry. Registering the same manifest (bucket, key
// and ETag) again returns the batch as it is (created false); another
// manifest, or a batch of that id without one, is ErrBatchExists.
func (s *Store) RegisterManifest(ctx context.Context, m Manifest, report string) (Manifest, bool, error) {
	m.State = ManifestReading
	if m.RegisteredAt.IsZero() {
		m.RegisteredAt = s.cfg.Now().UTC()
	}
	b, err := json.Marshal(m)
	if err != nil {
		return Manifest{}, false, fmt.Errorf("status: encode manifest: %w", err)
	}
	member := batchMember(m.Tenant, m.BatchID)
	// The reader's set first: a batch it lists without a manifest is
	// dropped by the reader, while a manifest it did not list would never
	// be read. (Separate commands: on a Redis Cluster these keys are in
	// other slots than the batch's.)
	if err := s.rdb.SAdd(ctx, s.ManifestsKey(), member).Err(); err != nil {
		return Manifest{}, false, fmt.Errorf("status: register manifest of batch %s: %w", m.BatchID, err)
	}
	res, err := registerScript.Run(ctx, s.rdb, []string{s.batchKey(m.Tenant, m.BatchID)}, b, m.Bucket, m.Key, m.ETag, report).Slice()
	if err != nil {
		return Manifest{}, false, fmt.Errorf("status: register manifest of batch %s: %w", m.BatchID, err)
	}
	n, _ := res[0].(int64)
	raw, _ := res[1].(string)
	if n == -1 {
		return Manifest{}, false, fmt.Errorf("status: batch %s: %w", m.BatchID, ErrBatchExists)
	}
	if err := s.rdb.ZAddNX(ctx, s.BatchesKey(), redis.Z{Score: float64(m.RegisteredAt.UnixMilli()), Member: member}).Err(); err != nil {
		return Manifest{}, false, fmt.Errorf("status: register manifest of batch %s: %w", m.BatchID, err)
	}
	if report != "" {
		// Listed for the report writer now: the batch may end when its
		// last line is read rather than when a request ends (every line
		// refused, say), and the writer looks only at the batches listed.
		if err := s.rdb.SAdd(ctx, s.ReportsDueKey(), member).Err(); err != nil {
			return Manifest{}, false, fmt.Errorf("status: register manifest of batch %s: %w", m.BatchID, err)
		}
	}
	var have Manifest
	if err := json.Unmarshal([]byte(raw), &have); err != nil {
		return Manifest{}, false, fmt.Errorf("status: decode manifest of batch %s: %w", m.BatchID, err)
	}
	return have, n == 1, nil
}

// registerScript: KEYS[1] the batch hash; ARGV[1] the descriptor,
// ARGV[2..4] bucket, key, ETag, ARGV[5] the report destination. Returns
// {1, desc} when created, {0, desc} for the same manifest, {-1, ""} for
// another.
var registerScript = redis.NewScript(`
local have = redis.call('HGET', KEYS[1], 'manifest')
if have then
  local m = cjson.decode(have)
  if m.bucket == ARGV[2] and m.key == ARGV[3] and m.etag == ARGV[4] then return {0, have} end
  return {-1, ''}
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, ''} end
redis.call('HSET', KEYS[1], 'manifest', ARGV[1], 'reading', '1')
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'report', ARGV[5]) end
return {1, ARGV[1]}
`)

// Manifest returns a tenant's batch's manifest (ok false: the batch has none).
func (s *Store) Manifest(ctx context.Context, tenant, batchID string) (Manifest, bool, error) {
	raw, err := s.rdb.HGet(ctx, s.batchKey(tenant, batchID), ManifestField).Bytes()
	if errors.Is(err, redis.Nil) {
		return Manifest{}, false, nil
	}
	if err != nil {
		return Manifest{}, false, fmt.Errorf("status: manifest of batch %s: %w", batchID, err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return Manifest{}, false, fmt.Errorf("status: decode manifest of batch %s: %w", batchID, err)
	}
	return m, true, nil
}

// ReadingManifests lists the batches whose manifest is being read, as
// (tenant, batch id).
func (s *Store) ReadingManifests(ctx context.Context) ([][2]string, error) {
	ms, err := s.rdb.SMembers(ctx, s.ManifestsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("status: manifests: %w", err)
	}
	out := make([][2]string, 0, len(ms))
	for _, m := range ms {
		if t, id, ok := strings.Cut(m, "/"); ok {
			out = append(out, [2]string{t, id})
		}
	}
	return out, nil
}

// ForgetManifest drops a batch from ManifestsKey: one whose counts are gone
// (deleted by an operator) is read no more.
func (s *Store) ForgetManifest(ctx context.Context, tenant, batchID string) error {
	if err := s.rdb.SRem(ctx, s.ManifestsKey(), batchMember(tenant, batchID)).Err(); err != nil {
		return fmt.Errorf("status: forget manifest of batch %s: %w", batchID, err)
	}
	return nil
}

// SaveManifest writes m's progress (its cursor, state, total). A state
// other than reading ends the reading: ReadingField goes, the batch leaves
// ManifestsKey, and its keys get their TTL when nothing of it waits. Only
// a reading descriptor is written over: a manifest that stopped or ended
// stays so.
func (s *Store) SaveManifest(ctx context.Context, m Manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("status: encode manifest: %w", err)
	}
	end := "0"
	if m.State != ManifestReading {
		end = "1"
	}
	if err := saveManifestScript.Run(ctx, s.rdb, s.batchKeys(m.Tenant, m.BatchID), s.cfg.TTL.Milliseconds(), b, end).Err(); err != nil {
		return fmt.Errorf("status: save manifest of batch %s: %w", m.BatchID, err)
	}
	if end == "1" {
		// After the descriptor (another slot on a Cluster): a crash in
		// between leaves the batch listed, and the reader drops it then.
		return s.ForgetManifest(ctx, m.Tenant, m.BatchID)
	}
	return nil
}

// saveManifestScript: KEYS[1..10] batchKeys; ARGV[1] the TTL, ARGV[2] the
// descriptor, ARGV[3] 1 to end the reading.
var saveManifestScript = redis.NewScript(settleLua + `
local have = redis.call('HGET', KEYS[1], 'manifest')
if not have or cjson.decode(have).state ~= 'reading' then return 0 end
redis.call('HSET', KEYS[1], 'manifest', ARGV[2])
if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[1], 'reading')
  settle(1, ARGV[1])
end
return 1
`)

// RefuseLine counts a manifest line that is no request (unparseable, an
// invalid field, no request id…) as failed in its batch and appends its
// report line, in one step, then counts it in the failures per code the
// overview reads. Lines are refused in order: a line at or below the highest one
// refused already is not counted again (a reader that re-reads a chunk
// after a crash), and false is returned.
func (s *Store) RefuseLine(ctx context.Context, tenant, batchID string, line ReportLine) (bool, error) {
	line.State = "failed"
	b, err := json.Marshal(line)
	if err != nil {
		return false, fmt.Errorf("status: encode report line: %w", err)
	}
	now := s.cfg.Now().UTC()
	keys := []string{s.batchKey(tenant, batchID), s.ReportKey(tenant, batchID)}
	n, err := refuseScript.Run(ctx, s.rdb, keys, line.Line, b).Int()
	if err != nil {
		return false, fmt.Errorf("status: refuse line %d of batch %s: %w", line.Line, batchID, err)
	}
	if n == 1 {
		// The overview's count (another slot on a Cluster), as countFailure.
		fk := s.failuresKey(now)
		pipe := s.rdb.Pipeline()
		pipe.HIncrBy(ctx, fk, now.Format("04")+":"+line.Code, 1)
		pipe.Expire(ctx, fk, 2*time.Hour)
		if _, err := pipe.Exec(ctx); err != nil {
			return true, fmt.Errorf("status: count refused line %d of batch %s: %w", line.Line, batchID, err)
		}
	}
	return n == 1, nil
}

var refuseScript = redis.NewScript(`
local top = tonumber(redis.call('HGET', KEYS[1], 'refusedLine') or '0')
if tonumber(ARGV[1]) <= top then return 0 end
redis.call('HSET', KEYS[1], 'refusedLine', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'failed', 1)
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
`)
