package records

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// reportLines reads a batch's report through WriteReport, by request id
// (the last line of an id holds), and the lines in order.
func reportLines(t *testing.T, st *Store, tenant, batch string) (map[string]ReportLine, []ReportLine, ReportStats) {
	t.Helper()
	var buf bytes.Buffer
	stats, err := st.WriteReport(context.Background(), tenant, batch, &buf)
	require.NoError(t, err)
	byID := map[string]ReportLine{}
	var all []ReportLine
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var l ReportLine
		require.NoError(t, dec.Decode(&l))
		byID[l.RequestID] = l
		all = append(all, l)
	}
	assert.Equal(t, int64(len(all)), stats.Lines)
	return byID, all, stats
}

// Every way a request of a batch ends (a worker's success, a reuse, a
// final failure, FailWaiting, a cancel) appends its line to the batch's
// report in the step that moves its counts; the report lists the others
// as their records stand, and once the batch is done it is exact, even
// after the records expired. The report's list has no TTL while the batch
// runs and the batch's once it is done.
func TestTheReportLogsEveryEnd(t *testing.T) {
	for name, open := range expiryStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st, rdb := open(t)
			var recs []status.Record
			for _, id := range []string{"ok", "reuse", "bad", "lost", "cancel", "run", "wait"} {
				recs = append(recs, status.Record{RequestID: id, Params: tasks.Params{BatchID: "cat", Tenant: "acme"}, Line: int64(len(recs) + 1)})
			}
			_, err := st.CreateMany(ctx, recs)
			require.NoError(t, err)
			by := By{Attempt: 1}
			steps := []struct {
				id string
				u  Update
			}{
				{"ok", by.Start(nil)},
				{"ok", by.Checkpoint(&status.Checkpoint{ResultURL: "http://x/r.png"}, 1, false)},
				{"ok", by.Succeed(status.Stored{Bucket: "b", Key: "k/ok.png", ETag: `"e1"`, Size: 123})},
				{"reuse", by.Start(nil)},
				{"reuse", by.Reuse(status.Stored{Bucket: "b", Key: "k/reuse.png", ETag: `"e2"`, Size: 45}, "ok")},
				{"bad", by.Start(nil)},
				{"bad", by.Fail(false, "storage_upload", "s3 down")},
				{"bad", By{Attempt: 2}.Start(nil)},
				{"bad", By{Attempt: 2}.Fail(true, "image_fetch", "404 from the image host")},
				{"run", by.Start(nil)},
			}
			for _, s := range steps {
				_, err := st.Transition(ctx, s.id, s.u)
				require.NoError(t, err, "%s → %s", s.id, s.u.To)
			}
			_, err = st.FailWaiting(ctx, status.Record{RequestID: "lost", Params: tasks.Params{BatchID: "cat", Tenant: "acme"}}, "bad_entry", "unreadable entry")
			require.NoError(t, err)
			_, err = st.Cancel(ctx, "cancel")
			require.NoError(t, err)

			// The list holds the ended ones, in the order they ended, as
			// many as the terminal counts.
			raw, err := rdb.LRange(ctx, st.ReportKey("acme", "cat"), 0, -1).Result()
			require.NoError(t, err)
			var order []string
			for _, r := range raw {
				var l ReportLine
				require.NoError(t, json.Unmarshal([]byte(r), &l))
				order = append(order, l.RequestID)
			}
			assert.Equal(t, []string{"ok", "reuse", "bad", "lost", "cancel"}, order)
			b, err := st.BatchState(ctx, "acme", "cat")
			require.NoError(t, err)
			assert.Equal(t, int64(5), b.Counts[status.Succeeded]+b.Counts[status.Failed]+b.Counts[status.Canceled])
			assert.Equal(t, time.Duration(-1), ttl(t, rdb, st.ReportKey("acme", "cat")), "no TTL while the batch runs")

			byID, all, stats := reportLines(t, st, "acme", "cat")
			assert.False(t, stats.Done)
			assert.Len(t, all, 7, "every request once: %v", all)
			ok := byID["ok"]
			assert.Equal(t, ReportLine{RequestID: "ok", Line: 1, State: "succeeded", Bucket: "b", Key: "k/ok.png", ETag: `"e1"`, Size: 123,
				PaidCalls: 1, FinishedAt: ok.FinishedAt}, ok)
			assert.False(t, ok.FinishedAt.IsZero())
			assert.Equal(t, "ok", byID["reuse"].ReusedFrom)
			assert.Equal(t, 0, byID["reuse"].PaidCalls)
			assert.Equal(t, ReportLine{RequestID: "bad", Line: 3, State: "failed", Code: "image_fetch", Message: "404 from the image host",
				FinishedAt: byID["bad"].FinishedAt}, byID["bad"])
			assert.Equal(t, "bad_entry", byID["lost"].Code)
			assert.Equal(t, "failed", byID["lost"].State)
			assert.Equal(t, "canceled", byID["cancel"].State)
			assert.Equal(t, ReportLine{RequestID: "run", Line: 6, State: "running"}, byID["run"], "still running: no finish time")
			assert.Equal(t, ReportLine{RequestID: "wait", Line: 7, State: "queued"}, byID["wait"])

			_, err = st.Transition(ctx, "run", by.Fail(true, "api_400", "bad image"))
			require.NoError(t, err)
			_, err = st.Cancel(ctx, "wait")
			require.NoError(t, err)
			assertBatchTTL(t, st, rdb, "acme", "cat", false, "done")
			// The records expire before the batch (their TTL runs from their
			// own end): the report still names them all.
			for _, r := range recs {
				require.NoError(t, rdb.Del(ctx, st.Key(r.RequestID)).Err())
			}
			byID, all, stats = reportLines(t, st, "acme", "cat")
			assert.True(t, stats.Done, "exact once done")
			assert.Len(t, all, 7)
			assert.Equal(t, "api_400", byID["run"].Code)
			assert.Equal(t, "canceled", byID["wait"].State)

			// Another tenant's batch of that name is another batch.
			_, err = st.WriteReport(ctx, "globex", "cat", &bytes.Buffer{})
			assert.ErrorIs(t, err, status.ErrNotFound)
		})
	}
}

// A batch whose manifest is still read (ReadingField) is not done, even
// with every request ended: its keys keep no TTL and its report is not
// exact.
func TestABatchReadingItsManifestIsNotDone(t *testing.T) {
	ctx := context.Background()
	st, rdb := expiryStores(t)["single"](t)
	_, err := st.CreateMany(ctx, []status.Record{{RequestID: "m1", Params: tasks.Params{BatchID: "man"}, Line: 1}})
	require.NoError(t, err)
	require.NoError(t, rdb.HSet(ctx, st.batchKey("", "man"), ReadingField, "1").Err())
	_, err = st.Cancel(ctx, "m1")
	require.NoError(t, err)
	b, err := st.BatchState(ctx, "", "man")
	require.NoError(t, err)
	assert.True(t, b.Reading)
	assert.False(t, b.Done())
	assert.Equal(t, map[status.State]int64{status.Canceled: 1}, b.Counts, "reading is not a state")
	assertBatchTTL(t, st, rdb, "", "man", true, "reading")
	_, _, stats := reportLines(t, st, "", "man")
	assert.False(t, stats.Done)

	// A batch that only reads (no line read yet) is found.
	require.NoError(t, rdb.HSet(ctx, st.batchKey("", "fresh"), ReadingField, "1").Err())
	b, err = st.BatchState(ctx, "", "fresh")
	require.NoError(t, err)
	assert.True(t, b.Found())
	_, all, _ := reportLines(t, st, "", "fresh")
	assert.Empty(t, all)
}

// A batch with a report destination is listed as due when it is done, and
// keeps its keys without a TTL until the report is written (or can never
// be); then they get the batch's TTL and it leaves the list.
func TestAReportDueKeepsItsBatch(t *testing.T) {
	for name, open := range expiryStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st, rdb := open(t)
			_, err := st.CreateMany(ctx, []status.Record{{RequestID: "d1", Params: tasks.Params{BatchID: "due", Tenant: "acme"}}, {RequestID: "d2",
				Params: tasks.Params{BatchID: "due", Tenant: "acme"}}})
			require.NoError(t, err)
			require.NoError(t, st.ExpectReport(ctx, "acme", "due", "s3://reports/acme/"))
			// Listed at registration; a crash that lost that is repaired by
			// the last end.
			require.NoError(t, rdb.Del(ctx, st.ReportsDueKey()).Err())
			_, err = st.Cancel(ctx, "d1")
			require.NoError(t, err)
			due, err := st.ReportsDue(ctx, 10)
			require.NoError(t, err)
			assert.Empty(t, due, "not done yet")
			_, err = st.Cancel(ctx, "d2")
			require.NoError(t, err)
			due, err = st.ReportsDue(ctx, 10)
			require.NoError(t, err)
			assert.Equal(t, []BatchRef{{Tenant: "acme", BatchID: "due"}}, due)
			assertBatchTTL(t, st, rdb, "acme", "due", true, "done, report due")
			b, err := st.BatchState(ctx, "acme", "due")
			require.NoError(t, err)
			assert.True(t, b.Done())
			assert.Equal(t, "s3://reports/acme/", b.Report)

			require.NoError(t, st.ReportWritten(ctx, "acme", "due", "s3://reports/acme/due.jsonl"))
			assertBatchTTL(t, st, rdb, "acme", "due", false, "written")
			due, err = st.ReportsDue(ctx, 10)
			require.NoError(t, err)
			assert.Empty(t, due)
			b, err = st.BatchState(ctx, "acme", "due")
			require.NoError(t, err)
			assert.Equal(t, "s3://reports/acme/due.jsonl", b.ReportWritten)
			assert.Len(t, b.Counts, 1, "the report's fields are no counts")

			// Marking a batch that expired meanwhile does not bring it back.
			for _, k := range st.batchKeys("acme", "gone") {
				require.NoError(t, rdb.Del(ctx, k).Err())
			}
			require.NoError(t, st.ReportFailed(ctx, "acme", "gone", "bucket missing"))
			assert.Equal(t, time.Duration(-2), ttl(t, rdb, st.batchKey("acme", "gone")))
		})
	}
}

// pageMeter is a go-redis hook that records the largest reply, in items,
// of any command, and how many commands ran: what a paged reader bounds.
type pageMeter struct {
	mu       sync.Mutex
	maxItems int
	maxBytes int
	cmds     int
}

func (m *pageMeter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (m *pageMeter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		m.observe(cmd)
		return err
	}
}

func (m *pageMeter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			m.observe(c)
		}
		return err
	}
}

func (m *pageMeter) observe(cmd redis.Cmder) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cmds++
	switch c := cmd.(type) {
	case *redis.StringSliceCmd:
		m.maxItems = max(m.maxItems, len(c.Val()))
		n := 0
		for _, s := range c.Val() {
			n += len(s)
		}
		m.maxBytes = max(m.maxBytes, n)
	case *redis.MapStringStringCmd:
		m.maxItems = max(m.maxItems, len(c.Val()))
	case *redis.StringCmd:
		m.maxBytes = max(m.maxBytes, len(c.Val()))
	}
}

// A report of a batch of 100,000 requests (some ended, most still queued)
// is read a page at a time: no reply holds more than a page of lines, ids
// or records, and every request is there once.
func TestAReportIsReadAPageAtATime(t *testing.T) {
	const n, ended, page = 100_000, 1_500, 1000
	ctx := context.Background()
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	st := NewStore(rdb, status.Config{Prefix: "t:", TTL: time.Hour})
	recs := make([]status.Record, 0, 1000)
	for i := range n {
		recs = append(recs, status.Record{RequestID: fmt.Sprintf("big-%06d", i), Params: tasks.Params{BatchID: "big"}, SourceURL: "https://cdn.example.com/p.jpg"})
		if len(recs) == cap(recs) {
			_, err := st.CreateMany(ctx, recs)
			require.NoError(t, err)
			recs = recs[:0]
		}
	}
	for i := 0; i < ended; i++ {
		_, err := st.Cancel(ctx, fmt.Sprintf("big-%06d", i*(n/ended)))
		require.NoError(t, err)
	}

	m := &pageMeter{}
	rdb.AddHook(m)
	seen := make(map[string]int, n)
	states := map[string]int{}
	stats, err := st.StreamReport(ctx, "", "big", page, func(line []byte) error {
		var l ReportLine
		if err := json.Unmarshal(line, &l); err != nil {
			return err
		}
		seen[l.RequestID]++
		states[l.State]++
		return nil
	})
	require.NoError(t, err)
	assert.False(t, stats.Done)
	assert.Equal(t, int64(n), stats.Lines)
	assert.Len(t, seen, n, "every request")
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("%s appears %d times in a batch nothing moved in", id, c)
		}
	}
	assert.Equal(t, map[string]int{"canceled": ended, "queued": n - ended}, states)
	assert.LessOrEqual(t, m.maxItems, page, "no reply holds more than a page")
	assert.Less(t, m.maxBytes, page*200, "no reply holds more than a page of bytes")
	// The ids, bitmaps and records of each page, and a few more.
	assert.Less(t, m.cmds, n+4*(n/page)+50, "records are read in pipelined pages")
	t.Logf("%d lines, %d commands, largest reply %d items, %d bytes", stats.Lines, m.cmds, m.maxItems, m.maxBytes)
}

// A request whose record Redis lost, failed by FailWaiting from its
// backlog entry (record_lost), is in its batch's report once, with its
// manifest line from the seed.
func TestALostRecordFailedIsReported(t *testing.T) {
	ctx := context.Background()
	st, rdb := expiryStores(t)["single"](t)
	_, err := st.CreateMany(ctx, []status.Record{{RequestID: "l1", Params: tasks.Params{BatchID: "lost"}, Line: 4}, {RequestID: "l2", Params: tasks.Params{BatchID: "lost"}, Line: 5}})
	require.NoError(t, err)
	require.NoError(t, rdb.Del(ctx, st.Key("l1")).Err())
	_, err = st.FailWaiting(ctx, status.Record{RequestID: "l1", Params: tasks.Params{BatchID: "lost"}, Line: 4}, "record_lost", "its record was lost")
	require.NoError(t, err)
	byID, all, stats := reportLines(t, st, "", "lost")
	assert.False(t, stats.Done)
	assert.Len(t, all, 2, "each request once: %v", all)
	assert.Equal(t, ReportLine{RequestID: "l1", Line: 4, State: "failed", Code: "record_lost", Message: "its record was lost",
		FinishedAt: byID["l1"].FinishedAt}, byID["l1"])
	assert.Equal(t, "queued", byID["l2"].State)
	n, err := rdb.LLen(ctx, st.ReportKey("", "lost")).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
}
