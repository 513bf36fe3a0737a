package status

// The batch index lets the web UI list batches and page a batch's requests
// by state without reading every record: one sorted set per (batch, state)
// holds the request ids in that state, scored by creation time, beside the
// batch's counts hash (same hash tag, so the same Cluster slot). A request
// is in exactly one set; a transition moves it. A registry of batches
// (one sorted set for the whole deployment, one member per batch) lists
// them, and failures are counted per code and minute for the overview.
//
// Cost: one sorted-set entry per request of a batch (requests without a
// batch id are not indexed), measured by `make bench-ui`.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// GridOrder is the order of a batch's requests when no state is chosen:
// what needs a look first, then the results, then what is still moving.
var GridOrder = []State{Failed, Succeeded, Retrying, Cropped, Running, Queued, Canceled}

// indexKey is the set of a tenant's batch's requests in state st.
func (s *Store) indexKey(tenant, batchID string, st State) string {
	return s.batchKey(tenant, batchID) + ":" + string(st)
}

// paidKey counts the paid calls of a batch's finished requests.
func (s *Store) paidKey(tenant, batchID string) string {
	return s.batchKey(tenant, batchID) + ":paid"
}

// BatchesKey is the registry of batches: member "tenant/batchId", scored by
// the batch's creation time in milliseconds.
func (s *Store) BatchesKey() string { return s.cfg.Prefix + "batches" }

// failuresKey counts failures per "minute:code" in the hour of t (UTC).
func (s *Store) failuresKey(t time.Time) string {
	return s.cfg.Prefix + "failures:" + t.UTC().Format("2006010215")
}

func batchMember(tenant, batchID string) string {
	if tenant == "" {
		tenant = "default"
	}
	return tenant + "/" + batchID
}

// indexTransition queues on p what a transition changes in the index: the
// request moves from its old state's set to its new one; a terminal request
// adds its paid calls to the batch's; a failure is counted by code.
func (s *Store) indexTransition(ctx context.Context, p redis.Pipeliner, rec Record, from State, counted bool) bool {
	any := false
	if rec.BatchID != "" && from != rec.State {
		if counted {
			p.ZRem(ctx, s.indexKey(rec.Tenant, rec.BatchID, from), rec.RequestID)
		}
		to := s.indexKey(rec.Tenant, rec.BatchID, rec.State)
		p.ZAdd(ctx, to, redis.Z{Score: float64(rec.CreatedAt.UnixMilli()), Member: rec.RequestID})
		p.PExpire(ctx, to, s.cfg.TTL)
		if rec.State.Terminal() && rec.PaidCalls > 0 {
			pk := s.paidKey(rec.Tenant, rec.BatchID)
			p.IncrBy(ctx, pk, int64(rec.PaidCalls))
			p.PExpire(ctx, pk, s.cfg.TTL)
		}
		if !counted {
			// A record created by its first attempt (no create step): its
			// batch may be new.
			p.ZAddNX(ctx, s.BatchesKey(), redis.Z{Score: float64(rec.CreatedAt.UnixMilli()), Member: batchMember(rec.Tenant, rec.BatchID)})
		}
		any = true
	}
	if rec.State == Failed && from != Failed {
		at := rec.UpdatedAt
		fk := s.failuresKey(at)
		p.HIncrBy(ctx, fk, at.UTC().Format("04")+":"+cmp.Or(rec.ErrorCode, "unknown"), 1)
		p.Expire(ctx, fk, 2*time.Hour)
		any = true
	}
	return any
}

// indexCreatedCluster queues on p the index entries of the records a Cluster
// create made (the script does it on one primary).
func (s *Store) indexCreatedCluster(ctx context.Context, p redis.Pipeliner, recs []Record, out []Created) {
	for i, c := range out {
		if !c.Created || recs[i].BatchID == "" {
			continue
		}
		score := float64(c.Record.CreatedAt.UnixMilli())
		k := s.indexKey(recs[i].Tenant, recs[i].BatchID, Queued)
		p.ZAdd(ctx, k, redis.Z{Score: score, Member: recs[i].RequestID})
		p.PExpire(ctx, k, s.cfg.TTL)
		p.ZAddNX(ctx, s.BatchesKey(), redis.Z{Score: score, Member: batchMember(recs[i].Tenant, recs[i].BatchID)})
	}
}

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
	Records []Record // in order; a request whose record expired is left out
	Total   int64    // requests in the chosen state (or in the batch)
}

// BatchPage returns the requests of a tenant's batch in state st (every
// state, in GridOrder, when st is ""), oldest first within a state,
// skipping offset and taking at most limit. It costs three round trips and
// O(log n + limit) work in Redis whatever the batch's size.
func (s *Store) BatchPage(ctx context.Context, tenant, batchID string, st State, offset, limit int64) (Page, error) {
	states := GridOrder
	if st != "" {
		if !slices.Contains(GridOrder, st) {
			return Page{}, fmt.Errorf("status: unknown state %q", st)
		}
		states = []State{st}
	}
	pipe := s.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(states))
	for i, x := range states {
		cards[i] = pipe.ZCard(ctx, s.indexKey(tenant, batchID, x))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return Page{}, fmt.Errorf("status: batch %s page: %w", batchID, err)
	}
	var page Page
	pipe = s.rdb.Pipeline()
	var ranges []*redis.StringSliceCmd
	skip, want := offset, limit
	for i, x := range states {
		n := cards[i].Val()
		page.Total += n
		if want <= 0 {
			continue
		}
		if skip >= n {
			skip -= n
			continue
		}
		take := min(want, n-skip)
		ranges = append(ranges, pipe.ZRange(ctx, s.indexKey(tenant, batchID, x), skip, skip+take-1))
		want -= take
		skip = 0
	}
	if len(ranges) == 0 {
		return page, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return Page{}, fmt.Errorf("status: batch %s page: %w", batchID, err)
	}
	var ids []string
	for _, r := range ranges {
		ids = append(ids, r.Val()...)
	}
	recs, err := s.GetMany(ctx, ids)
	if err != nil {
		return Page{}, err
	}
	page.Records = recs
	return page, nil
}

// GetMany reads the records of ids in one round trip (a record that does
// not exist is left out).
func (s *Store) GetMany(ctx context.Context, ids []string) ([]Record, error) {
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
	out := make([]Record, 0, len(ids))
	for i, g := range gets {
		b, err := g.Bytes()
		if err != nil {
			continue
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("status: decode %s: %w", ids[i], err)
		}
		out = append(out, r.filled())
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
