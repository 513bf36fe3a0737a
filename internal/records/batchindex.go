package records

// The batch index lets the web UI list batches and page a batch's requests
// by state without reading every record, for little Redis per request:
//
//   - a list of the batch's request ids, in the order they were created
//     (about the id's length and 2 bytes each); a record's place in it is
//     its BatchSeq;
//   - one bitmap per state, a bit per place, set where the request is in
//     that state (under a byte per request for all of them);
//
// both beside the batch's counts hash (same hash tag, so the same Cluster
// slot). A transition moves the request's bit from one bitmap to the
// other. A page reads the bitmaps it needs (N/8 bytes each), finds the
// places of its requests in Go, then their ids and records. A registry of
// batches (one sorted set for the deployment, one member per batch) lists
// them, and failures are counted per code and minute for the overview.
// Requests without a batch id are not indexed; `make bench-ui` measures
// the cost.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/status"
)

// GridOrder is the order of a batch's requests when no state is chosen:
// what needs a look first, then the results, then what is still moving.
var GridOrder = []status.State{status.Failed, status.Succeeded, status.Retrying, status.Cropped, status.Running, status.Queued, status.Canceled}

// idsKey is the list of a tenant's batch's request ids.
func (s *Store) idsKey(tenant, batchID string) string {
	return s.keys().BatchIDs(keyTenant(tenant), batchID)
}

// indexKey is the bitmap of a tenant's batch's requests in state st.
func (s *Store) indexKey(tenant, batchID string, st status.State) string {
	return s.keys().BatchState(keyTenant(tenant), batchID, string(st))
}

// paidKey counts the paid calls of a batch's finished requests.
func (s *Store) paidKey(tenant, batchID string) string {
	return s.keys().BatchPaid(keyTenant(tenant), batchID)
}

// BatchesKey is the registry of batches: member "tenant/batchId", scored by
// the batch's creation time in milliseconds.
func (s *Store) BatchesKey() string { return s.keys().Batches() }

// failuresKey counts failures per "minute:code" in the hour of t (UTC).
func (s *Store) failuresKey(t time.Time) string {
	return s.keys().Failures(t)
}

func batchMember(tenant, batchID string) string {
	if tenant == "" {
		tenant = "default"
	}
	return tenant + "/" + batchID
}

// countFailure queues on p the count of a failure by code and minute, when
// rec just failed.
func (s *Store) countFailure(ctx context.Context, p redis.Pipeliner, rec status.Record, from status.State) bool {
	if rec.State != status.Failed || from == status.Failed {
		return false
	}
	at := rec.UpdatedAt
	fk := s.failuresKey(at)
	p.HIncrBy(ctx, fk, at.UTC().Format("04")+":"+cmp.Or(rec.ErrorCode, "unknown"), 1)
	p.Expire(ctx, fk, 2*time.Hour)
	s.indexFailure(ctx, p, rec)
	return true
}

// indexCreatedCluster indexes the records a Cluster create made (the
// script does it on one primary): their ids are appended to their batch's
// list, which gives their places; each record then learns its place, and
// the bitmap of the state it is in by then gets its bit. A crash in
// between leaves a request out of the grid, never a wrong record. The
// caller settles the batches' TTL afterwards.
func (s *Store) indexCreatedCluster(ctx context.Context, recs []status.Record, out []Created) error {
	var idx []int
	pipe := s.rdb.Pipeline()
	var pushes []*redis.IntCmd
	for i, c := range out {
		if !c.Created || recs[i].BatchID == "" {
			continue
		}
		idx = append(idx, i)
		ids := s.idsKey(recs[i].Tenant, recs[i].BatchID)
		pushes = append(pushes, pipe.RPush(ctx, ids, recs[i].RequestID))
		pipe.ZAddNX(ctx, s.BatchesKey(), redis.Z{Score: float64(c.Record.CreatedAt.UnixMilli()), Member: batchMember(recs[i].Tenant, recs[i].BatchID)})
	}
	if len(idx) == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("status: index batch: %w", err)
	}
	pipe = s.rdb.Pipeline()
	places := make([]*redis.Cmd, len(idx))
	for k, i := range idx {
		places[k] = placeScript.Eval(ctx, pipe, []string{s.Key(recs[i].RequestID)}, pushes[k].Val())
	}
	_, _ = pipe.Exec(ctx) // each reply is read below
	pipe = s.rdb.Pipeline()
	for k, i := range idx {
		st, err := places[k].Text()
		if err != nil || st == "" {
			continue // gone, or placed already
		}
		bm := s.indexKey(recs[i].Tenant, recs[i].BatchID, status.State(st))
		pipe.SetBit(ctx, bm, pushes[k].Val()-1, 1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("status: index batch: %w", err)
	}
	return nil
}

// placeScript writes the place ARGV[1] into the record KEYS[1] unless it
// has one, and returns the record's state ("" when nothing was done).
var placeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return '' end
local r = cjson.decode(v)
if r.batchSeq then return '' end
redis.call('SET', KEYS[1], string.sub(v, 1, -2) .. ',"batchSeq":' .. ARGV[1] .. '}', 'KEEPTTL')
return r.state
`)

// BatchRef names one batch of the registry.
type BatchRef struct {
	Tenant    string
	BatchID   string
	CreatedAt time.Time
}

// Batches lists the newest batches, newest first: those of tenant, or of
// every tenant when tenant is "". Batches whose counts expired are dropped
// from the registry on the way. At most limit are returned.
func (s *Store) Batches(ctx context.Context, tenant string, limit int) ([]BatchRef, error) {
	var out []BatchRef
	const chunk = 200
	for start := int64(0); len(out) < limit; start += chunk {
		zs, err := s.rdb.ZRevRangeWithScores(ctx, s.BatchesKey(), start, start+chunk-1).Result()
		if err != nil {
			return nil, fmt.Errorf("status: batches: %w", err)
		}
		if len(zs) == 0 {
			break
		}
		refs := make([]BatchRef, 0, len(zs))
		for _, z := range zs {
			m, _ := z.Member.(string)
			t, id, ok := strings.Cut(m, "/")
			if !ok || (tenant != "" && t != tenant) {
				continue
			}
			refs = append(refs, BatchRef{Tenant: t, BatchID: id, CreatedAt: time.UnixMilli(int64(z.Score)).UTC()})
		}
		pipe := s.rdb.Pipeline()
		exists := make([]*redis.IntCmd, len(refs))
		for i, r := range refs {
			exists[i] = pipe.Exists(ctx, s.batchKey(r.Tenant, r.BatchID))
		}
		if len(refs) > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, fmt.Errorf("status: batches: %w", err)
			}
		}
		var gone []any
		for i, r := range refs {
			if exists[i].Val() == 0 {
				gone = append(gone, batchMember(r.Tenant, r.BatchID))
				continue
			}
			if len(out) < limit {
				out = append(out, r)
			}
		}
		if len(gone) > 0 {
			// Expired with their records: forget them (best effort).
			_ = s.rdb.ZRem(ctx, s.BatchesKey(), gone...).Err()
			start -= int64(len(gone))
		}
	}
	return out, nil
}

// BatchPaidCalls is the paid calls of a batch's finished requests.
func (s *Store) BatchPaidCalls(ctx context.Context, tenant, batchID string) (int64, error) {
	n, err := s.rdb.Get(ctx, s.paidKey(tenant, batchID)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("status: batch %s paid calls: %w", batchID, err)
	}
	return n, nil
}

// Page is one page of a batch's requests.
type Page struct {
	Records []status.Record // in order; a request whose record expired is left out
	Total   int64           // requests in the chosen state (or in the batch)
}

// BatchPage returns the requests of a tenant's batch in state st (every
// state, in GridOrder, when st is ""), in the order they were created
// within a state, skipping offset and taking at most limit. It costs four
// round trips, the bitmaps it needs (a byte per 8 requests each) and O(n/8)
// work in Go, whatever the page.
func (s *Store) BatchPage(ctx context.Context, tenant, batchID string, st status.State, offset, limit int64) (Page, error) {
	states := GridOrder
	if st != "" {
		if !slices.Contains(GridOrder, st) {
			return Page{}, fmt.Errorf("status: unknown state %q", st)
		}
		states = []status.State{st}
	}
	pipe := s.rdb.Pipeline()
	counts := make([]*redis.IntCmd, len(states))
	for i, x := range states {
		counts[i] = pipe.BitCount(ctx, s.indexKey(tenant, batchID, x), nil)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return Page{}, fmt.Errorf("status: batch %s page: %w", batchID, err)
	}
	type want struct {
		st         status.State
		skip, take int64
		bits       *redis.StringCmd
	}
	var page Page
	var wants []*want
	skip, left := offset, limit
	for i, x := range states {
		n := counts[i].Val()
		page.Total += n
		if left <= 0 {
			continue
		}
		if skip >= n {
			skip -= n
			continue
		}
		take := min(left, n-skip)
		wants = append(wants, &want{st: x, skip: skip, take: take})
		left -= take
		skip = 0
	}
	if len(wants) == 0 {
		return page, nil
	}
	pipe = s.rdb.Pipeline()
	for _, w := range wants {
		w.bits = pipe.Get(ctx, s.indexKey(tenant, batchID, w.st))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Page{}, fmt.Errorf("status: batch %s page: %w", batchID, err)
	}
	var places []int64
	for _, w := range wants {
		b, _ := w.bits.Bytes()
		places = appendSetBits(places, b, w.skip, w.take)
	}
	pipe = s.rdb.Pipeline()
	ids := make([]*redis.StringCmd, len(places))
	for i, p := range places {
		ids[i] = pipe.LIndex(ctx, s.idsKey(tenant, batchID), p)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Page{}, fmt.Errorf("status: batch %s page: %w", batchID, err)
	}
	list := make([]string, 0, len(ids))
	for _, c := range ids {
		if id, err := c.Result(); err == nil {
			list = append(list, id)
		}
	}
	recs, err := s.GetMany(ctx, list)
	if err != nil {
		return Page{}, err
	}
	page.Records = recs
	return page, nil
}

// appendSetBits appends to out the places (bit offsets, Redis's order: the
// most significant bit of byte 0 is place 0) of the set bits of bm after
// skipping skip of them, take at most.
func appendSetBits(out []int64, bm []byte, skip, take int64) []int64 {
	for i, b := range bm {
		if b == 0 {
			continue
		}
		n := int64(bits.OnesCount8(b))
		if skip >= n {
			skip -= n
			continue
		}
		for j := 0; j < 8 && take > 0; j++ {
			if b&(0x80>>j) == 0 {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			out = append(out, int64(i)*8+int64(j))
			take--
		}
		if take == 0 {
			break
		}
	}
	return out
}

// GetMany reads the records of ids in one round trip (a record that does
// not exist is left out).
func (s *Store) GetMany(ctx context.Context, ids []string) ([]status.Record, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		gets[i] = pipe.Get(ctx, s.Key(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("status: get many: %w", err)
	}
	out := make([]status.Record, 0, len(ids))
	for i, g := range gets {
		b, err := g.Bytes()
		if err != nil {
			continue
		}
		var r status.Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("status: decode %s: %w", ids[i], err)
		}
		out = append(out, filled(r))
	}
	return out, nil
}

// FailuresSince counts failures by error code from since to now (at most
// the last two hours are kept).
func (s *Store) FailuresSince(ctx context.Context, since time.Time) (map[string]int64, error) {
	now := s.cfg.Now().UTC()
	since = since.UTC()
	out := map[string]int64{}
	for h := since.Truncate(time.Hour); !h.After(now); h = h.Add(time.Hour) {
		m, err := s.rdb.HGetAll(ctx, s.failuresKey(h)).Result()
		if err != nil {
			return nil, fmt.Errorf("status: failures: %w", err)
		}
		for field, v := range m {
			mm, code, ok := strings.Cut(field, ":")
			minute, err := strconv.Atoi(mm)
			if !ok || err != nil {
				continue
			}
			if h.Add(time.Duration(minute) * time.Minute).Before(since.Truncate(time.Minute)) {
				continue
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			out[code] += n
		}
	}
	return out, nil
}
