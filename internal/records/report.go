package records

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/status"
)

// A batch's report (GET /v1/batches/{id}/report, and the copy written to S3
// when the batch is done) is one ReportLine per request of the batch. The
// lines of finished requests, and of refused manifest lines, are kept in a
// list beside the batch's counts (ReportKey), written as each ends: a batch
// may take longer than its records live, and its report must not lose the
// requests that ended first.
//
// A request's line is appended by the same script that moves its batch's
// counts to its terminal state (moveScript), whoever ends it: a worker,
// FailWaiting or a cancel. The list is one of the batch's keys (batchKeys):
// it has no TTL while the batch is open and the batch's once it is done.

// ReportLine is one request of a batch in its report (one JSON line).
type ReportLine struct {
	RequestID  string `json:"requestId,omitempty"` // empty for a manifest line refused before it named one
	Line       int64  `json:"line,omitempty"`      // the manifest line, for manifest batches
	State      string `json:"state"`
	Code       string `json:"code,omitempty"`
	Message    string `json:"message,omitempty"`
	Bucket     string `json:"bucket,omitempty"`
	Key        string `json:"key,omitempty"`
	ETag       string `json:"etag,omitempty"`
	Size       int64  `json:"size,omitempty"`
	PaidCalls  int    `json:"paidCalls"`
	ReusedFrom string `json:"reusedFrom,omitempty"`
	// Unchanged: its destination already held this crop (a re-sync).
	Unchanged  bool      `json:"unchanged,omitempty"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Fields of a batch's counts hash that are not counts of a state.
const (
	// ReadingField is set while the batch's manifest still has lines to
	// read: a batch is done only when it is absent and no request of the
	// batch is in a non-terminal state.
	ReadingField = "reading"
	// ReportField is where the batch's report is written when it is done
	// ("s3://BUCKET/PREFIX/"), when its producer asked for one. It is set
	// with ExpectReport, which also lists the batch for the report writer.
	ReportField = "report"
	// ReportWrittenField is set once the report is in S3: the object's
	// s3://bucket/key. The batch's keys get their TTL then, not before.
	ReportWrittenField = "reportWritten"
	// ReportErrorField is set instead when the report can never be written
	// there (a destination the tenant may not use, a bucket that does not
	// exist): why.
	ReportErrorField = "reportError"
)

// ReportKey is the list of the report lines of a tenant's batch's ended
// requests (JSON ReportLine each), in the order they ended.
func (s *Store) ReportKey(tenant, batchID string) string {
	return s.keys().BatchReport(keyTenant(tenant), batchID)
}

// ReportsDueKey is the set of batches ("tenant/batchId") with a report
// destination whose report is not written yet: what the report writer
// scans, rather than every batch.
func (s *Store) ReportsDueKey() string { return s.keys().ReportsDue() }

// ReportLineOf is rec's line in its batch's report: as it stands, its
// finish time when it ended.
func ReportLineOf(rec status.Record) ReportLine {
	l := ReportLine{RequestID: rec.RequestID, Line: rec.Line, State: string(rec.State), Code: rec.ErrorCode,
		Message: rec.ErrorMessage, PaidCalls: rec.PaidCalls, ReusedFrom: rec.ReusedFrom, Unchanged: rec.Unchanged}
	if rec.Stored != nil {
		l.Bucket, l.Key, l.ETag, l.Size = rec.Stored.Bucket, rec.Stored.Key, rec.Stored.ETag, rec.Stored.Size
	}
	if rec.State.Terminal() {
		l.FinishedAt = rec.UpdatedAt.UTC()
	}
	return l
}

// reportLineOf is ReportLineOf encoded.
func reportLineOf(rec status.Record) []byte {
	b, _ := json.Marshal(ReportLineOf(rec)) // plain fields: cannot fail
	return b
}

// BatchState is a tenant's batch's counts hash, read.
type BatchState struct {
	Counts   map[status.State]int64
	Priority string
	// Reading: its manifest still has lines to read (ReadingField).
	Reading bool
	// Report is where its report is due ("s3://BUCKET/PREFIX/"), if
	// anywhere; ReportWritten the object once written, ReportError why it
	// never will be.
	Report, ReportWritten, ReportError string
}

// Waiting is how many of the batch's requests are not in a terminal state.
func (b BatchState) Waiting() int64 {
	var n int64
	for st, c := range b.Counts {
		if !st.Terminal() {
			n += c
		}
	}
	return n
}

// Done reports whether the batch is over: no request waits and no
// manifest line remains to be read.
func (b BatchState) Done() bool { return !b.Reading && b.Waiting() == 0 }

// Found reports whether the batch exists: it counts requests, or reads a
// manifest.
func (b BatchState) Found() bool { return len(b.Counts) > 0 || b.Reading }

// BatchState reads a tenant's batch's counts hash in one round trip (an
// unknown batch has no counts and is not Found).
func (s *Store) BatchState(ctx context.Context, tenant, batchID string) (BatchState, error) {
	m, err := s.rdb.HGetAll(ctx, s.batchKey(tenant, batchID)).Result()
	if err != nil {
		return BatchState{}, fmt.Errorf("status: batch %s: %w", batchID, err)
	}
	_, reading := m[ReadingField]
	b := BatchState{Priority: m["priority"], Reading: reading, Report: m[ReportField],
		ReportWritten: m[ReportWrittenField], ReportError: m[ReportErrorField]}
	// Only the states are counts: the hash holds other fields (priority,
	// saved, the manifest's and the report's).
	b.Counts = make(map[status.State]int64, len(batchStates))
	for _, st := range batchStates {
		var n int64
		if _, err := fmt.Sscan(m[string(st)], &n); err == nil && n != 0 {
			b.Counts[st] = n
		}
	}
	return b, nil
}

// ExpectReport asks for a tenant's batch's report to be written to dest
// ("s3://BUCKET/PREFIX/", checked by the caller) when the batch is done:
// what a registration that names a report destination does. The batch's
// keys keep no TTL until it is written, and the batch is listed for the
// report writer (ReportsDueKey). A manifest batch sets ReadingField first
// (or in the same step): a batch with nothing waiting and nothing to read
// is done, and its report, empty, would be written at once.
func (s *Store) ExpectReport(ctx context.Context, tenant, batchID, dest string) error {
	keys := s.batchKeys(tenant, batchID)
	if err := setFieldScript.Run(ctx, s.rdb, keys, s.cfg.TTL.Milliseconds(), ReportField, dest, "0").Err(); err != nil {
		return fmt.Errorf("status: batch %s report: %w", batchID, err)
	}
	if err := s.rdb.SAdd(ctx, s.ReportsDueKey(), batchMember(tenant, batchID)).Err(); err != nil {
		return fmt.Errorf("status: batch %s report: %w", batchID, err)
	}
	return nil
}

// ReportsDue lists up to n batches whose report is due or may soon be
// (their batch may still run), at random so that one stuck batch does
// not hide the others.
func (s *Store) ReportsDue(ctx context.Context, n int) ([]BatchRef, error) {
	ms, err := s.rdb.SRandMemberN(ctx, s.ReportsDueKey(), int64(n)).Result()
	if err != nil {
		return nil, fmt.Errorf("status: reports due: %w", err)
	}
	out := make([]BatchRef, 0, len(ms))
	for _, m := range ms {
		if t, id, ok := strings.Cut(m, "/"); ok {
			out = append(out, BatchRef{Tenant: t, BatchID: id})
		}
	}
	return out, nil
}

// ReportWritten records that a tenant's batch's report is at where
// (s3://bucket/key): the batch leaves the reports due, and its keys get
// their TTL if it is done.
func (s *Store) ReportWritten(ctx context.Context, tenant, batchID, where string) error {
	return s.reportSettled(ctx, tenant, batchID, ReportWrittenField, where)
}

// ReportFailed records that a tenant's batch's report can never be written
// to its destination, and why; as ReportWritten otherwise.
func (s *Store) ReportFailed(ctx context.Context, tenant, batchID, why string) error {
	return s.reportSettled(ctx, tenant, batchID, ReportErrorField, why)
}

// ForgetReport drops a batch that no longer exists (it expired) from the
// reports due.
func (s *Store) ForgetReport(ctx context.Context, tenant, batchID string) error {
	if err := s.rdb.SRem(ctx, s.ReportsDueKey(), batchMember(tenant, batchID)).Err(); err != nil {
		return fmt.Errorf("status: batch %s report: %w", batchID, err)
	}
	return nil
}

func (s *Store) reportSettled(ctx context.Context, tenant, batchID, field, value string) error {
	// Only on a batch that exists: an expired one is not written again.
	if err := setFieldScript.Run(ctx, s.rdb, s.batchKeys(tenant, batchID), s.cfg.TTL.Milliseconds(), field, value, "1").Err(); err != nil {
		return fmt.Errorf("status: batch %s report: %w", batchID, err)
	}
	return s.ForgetReport(ctx, tenant, batchID)
}

// setFieldScript sets the field ARGV[2] of the batch KEYS[1..11]
// (batchKeys) to ARGV[3] (only when the batch exists, with ARGV[4] = "1"),
// then settles its TTL (ARGV[1] ms).
var setFieldScript = redis.NewScript(settleLua + `
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
settle(1, ARGV[1])
return 1
`)

// DefaultReportPage is how many lines a report reads from Redis at a time.
const DefaultReportPage = 1000

// ReportStats says what a report held.
type ReportStats struct {
	Lines int64
	// Done: the batch was done when the report began, so the report is
	// exact (one line per request). Otherwise it is a snapshot: see
	// StreamReport.
	Done bool
}

// WriteReport writes a tenant's batch's report to w as NDJSON, one
// ReportLine per line (StreamReport), buffered; status.ErrNotFound, before
// anything is written, for an unknown batch.
func (s *Store) WriteReport(ctx context.Context, tenant, batchID string, w io.Writer) (ReportStats, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	st, err := s.StreamReport(ctx, tenant, batchID, DefaultReportPage, func(line []byte) error {
		if _, err := bw.Write(line); err != nil {
			return err
		}
		return bw.WriteByte('\n')
	})
	if err != nil {
		return st, err
	}
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("status: batch %s report: %w", batchID, err)
	}
	return st, nil
}

// StreamReport hands emit each line of a tenant's batch's report (a JSON
// ReportLine, without its newline), reading page lines from Redis at a
// time, never the whole report: memory stays that of a page whatever the
// batch's size. emit must not keep line.
//
// Once the batch is done (no request waits, no manifest line is left to
// read) the report is its list of ended requests, exact: one line per
// request. While it runs, the ended requests come first, then the others
// as their records stand (from the batch's list of ids, skipping those
// its bitmaps say ended), then the lines of requests that ended while the
// report was read: a request that ended meanwhile may appear twice, and
// its last line is the one that holds; a request created meanwhile
// appears only if it ended too. status.ErrNotFound, before emit is
// called, for an unknown batch.
func (s *Store) StreamReport(ctx context.Context, tenant, batchID string, page int, emit func(line []byte) error) (ReportStats, error) {
	if page <= 0 {
		page = DefaultReportPage
	}
	page = (page + 7) / 8 * 8 // whole bytes of the bitmaps
	b, err := s.BatchState(ctx, tenant, batchID)
	if err != nil {
		return ReportStats{}, err
	}
	var st ReportStats
	if !b.Found() {
		n, err := s.rdb.Exists(ctx, s.ReportKey(tenant, batchID)).Result()
		if err != nil {
			return st, fmt.Errorf("status: batch %s report: %w", batchID, err)
		}
		if n == 0 {
			return st, status.ErrNotFound
		}
	}
	st.Done = b.Done()
	pos, err := s.streamLog(ctx, tenant, batchID, 0, page, emit, &st)
	if err != nil || st.Done {
		return st, err
	}
	if err := s.streamWaiting(ctx, tenant, batchID, page, emit, &st); err != nil {
		return st, err
	}
	_, err = s.streamLog(ctx, tenant, batchID, pos, page, emit, &st)
	return st, err
}

// streamLog emits the report's list from pos on, a page at a time, and
// returns where it ended.
func (s *Store) streamLog(ctx context.Context, tenant, batchID string, pos int64, page int, emit func([]byte) error, st *ReportStats) (int64, error) {
	key := s.ReportKey(tenant, batchID)
	for {
		lines, err := s.rdb.LRange(ctx, key, pos, pos+int64(page)-1).Result()
		if err != nil {
			return pos, fmt.Errorf("status: batch %s report: %w", batchID, err)
		}
		for _, l := range lines {
			if err := emit([]byte(l)); err != nil {
				return pos, err
			}
			st.Lines++
		}
		pos += int64(len(lines))
		if len(lines) < page {
			return pos, nil
		}
	}
}

// terminalStates are the bitmaps that say a request is in the report's
// list already.
var terminalStates = []status.State{status.Succeeded, status.Failed, status.Canceled}

// streamWaiting emits the requests of the batch that have not ended, a
// page of its ids at a time: the page's bits of the terminal bitmaps say
// which ended (they are in the list), the records of the others are read.
// A record that is gone (an undone create) is left out.
func (s *Store) streamWaiting(ctx context.Context, tenant, batchID string, page int, emit func([]byte) error, st *ReportStats) error {
	idsKey := s.idsKey(tenant, batchID)
	for start := int64(0); ; start += int64(page) {
		end := start + int64(page) - 1
		pipe := s.rdb.Pipeline()
		idsCmd := pipe.LRange(ctx, idsKey, start, end)
		bits := make([]*redis.StringCmd, len(terminalStates))
		for i, x := range terminalStates {
			bits[i] = pipe.GetRange(ctx, s.indexKey(tenant, batchID, x), start/8, end/8)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("status: batch %s report: %w", batchID, err)
		}
		ids := idsCmd.Val()
		if len(ids) == 0 {
			return nil
		}
		ended := make([]byte, (len(ids)+7)/8)
		for _, c := range bits {
			for i, v := range []byte(c.Val()) {
				if i < len(ended) {
					ended[i] |= v
				}
			}
		}
		open := ids[:0:0]
		for i, id := range ids {
			if ended[i/8]&(0x80>>(i%8)) == 0 {
				open = append(open, id)
			}
		}
		recs, err := s.GetMany(ctx, open)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			// One that ended since its bit was read is in the list too;
			// written from its record all the same (the same line).
			if err := emit(reportLineOf(rec)); err != nil {
				return err
			}
			st.Lines++
		}
		if len(ids) < page {
			return nil
		}
	}
}
