package records

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/status"
)

// The failures index lists every failed request while its record lives,
// for the failures page and replays (POST /v1/replays): one sorted set for
// the deployment, scored by when the request failed, each member naming
// what a filter or a group needs without reading the record:
// "tenant\tbatch\tcode\tpaid\tid" (about 60 bytes and the id's length a
// failure). Members older than the records' TTL are pruned as failures
// are added; a replay removes its request's.

// FailedKey is the failures index.
func (s *Store) FailedKey() string { return s.keys().Failed() }

// Failure is one failed request as the index names it.
type Failure struct {
	Tenant, BatchID, Code, RequestID string
	// Paid is the request's paid calls when it failed.
	Paid int
	At   time.Time
}

func failedMember(rec status.Record) string {
	return strings.Join([]string{tenantOrDefault(rec.Tenant), rec.BatchID, rec.ErrorCode, strconv.Itoa(rec.PaidCalls), rec.RequestID}, "\t")
}

func tenantOrDefault(t string) string {
	if t == "" {
		return "default"
	}
	return t
}

func parseFailed(member string, score float64) (Failure, bool) {
	f := strings.SplitN(member, "\t", 5)
	if len(f) != 5 {
		return Failure{}, false
	}
	paid, _ := strconv.Atoi(f[3])
	return Failure{Tenant: f[0], BatchID: f[1], Code: f[2], Paid: paid, RequestID: f[4], At: time.UnixMilli(int64(score)).UTC()}, true
}

// indexFailure queues on p the request's entry in the failures index.
func (s *Store) indexFailure(ctx context.Context, p redis.Pipeliner, rec status.Record) {
	at := rec.UpdatedAt
	p.ZAdd(ctx, s.FailedKey(), redis.Z{Score: float64(at.UnixMilli()), Member: failedMember(rec)})
	if s.cfg.TTL > 0 {
		p.ZRemRangeByScore(ctx, s.FailedKey(), "-inf", "("+strconv.FormatInt(at.Add(-s.cfg.TTL).UnixMilli(), 10))
	}
}

// replayEffects queues on p what a replay does besides the record: its
// entry leaves the failures index (prev is the failed record) and its line
// the batch's report, and its backlog entry is appended.
func (s *Store) replayEffects(ctx context.Context, p redis.Pipeliner, prev status.Record, u Update) {
	if !u.Replay {
		return
	}
	p.ZRem(ctx, s.FailedKey(), failedMember(prev))
	if prev.BatchID != "" {
		// Its failure leaves the batch's report, which gets its next end
		// instead: one line per request. Searched from the tail, where a
		// recent failure is (Replay sends the newest first).
		p.LRem(ctx, s.ReportKey(prev.Tenant, prev.BatchID), -1, reportLineOf(prev))
	}
	if a := u.Append; a != nil {
		p.RPush(ctx, a.List, a.Value)
		p.SAdd(ctx, a.Set, a.Member)
	}
}

// FailureFilter chooses failed requests; zero fields choose all.
type FailureFilter struct {
	Tenant, BatchID, Code string
	Since, Until          time.Time // Until exclusive
}

// Match reports whether f chooses x.
func (f FailureFilter) Match(x Failure) bool {
	return (f.Tenant == "" || f.Tenant == x.Tenant) && (f.BatchID == "" || f.BatchID == x.BatchID) && (f.Code == "" || f.Code == x.Code)
}

// Failures calls fn with each failed request f chooses, oldest first, a
// page of the index at a time, until fn returns false.
func (s *Store) Failures(ctx context.Context, f FailureFilter, fn func(Failure) bool) error {
	lo, hi := "-inf", "+inf"
	if !f.Since.IsZero() {
		lo = strconv.FormatInt(f.Since.UnixMilli(), 10)
	}
	if !f.Until.IsZero() {
		hi = "(" + strconv.FormatInt(f.Until.UnixMilli(), 10)
	}
	const page = 5000
	for offset := int64(0); ; offset += page {
		zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: s.FailedKey(), Start: lo, Stop: hi, ByScore: true, Offset: offset, Count: page}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("status: failures: %w", err)
		}
		for _, z := range zs {
			m, _ := z.Member.(string)
			if x, ok := parseFailed(m, z.Score); ok && f.Match(x) {
				if !fn(x) {
					return nil
				}
			}
		}
		if len(zs) < page {
			return nil
		}
	}
}
