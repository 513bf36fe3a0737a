package backlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Work that needs no paid call (a result of the same crop is stored: a
// nightly re-sync) does not wait for the quota. With a Classifier, the
// feeder looks into each list ahead of its head, asks which entries are
// likely free (their crop key is indexed), and feeds those into a queue of
// their own (FeederConfig.FreeQueue) whose window is sized by the workers'
// concurrency, not by the quota; the rest is fed into the paid window as
// before, lanes and tenant shares holding for it, so that a listing
// submitted behind a million-line re-sync is not held back by it. A free
// task that turns out to need a call (its image changed behind its URL) is
// handed to the paid queue by the worker.

// Classifier tells which entries are likely to need no paid call: a result
// of the same crop is indexed (package dedup). It is a hint, never a
// promise: the worker decides.
type Classifier interface {
	Free(ctx context.Context, entries []Entry) ([]bool, error)
}

// Defaults of the free window.
const (
	DefaultFreeWindow = 64
	// DefaultScanDepth bounds how many entries of one list the feeder
	// keeps classified ahead of its head; DefaultScanStep how many more it
	// classifies per tick.
	DefaultScanDepth = 20000
	DefaultScanStep  = 2000
)

// scanned is an entry of a list the feeder has classified.
type scanned struct {
	raw     string
	at      time.Time
	id      string
	payload string
	free    bool
	bad     error // not decodable: left to the paid pass, which drops it
}

// listScan is what the feeder knows of the head of one list: its first
// len(entries) entries, in order. Only the leading feeder removes entries
// and producers only append, so it stays aligned with the list; it is
// checked against both ends each tick all the same, and read again when
// it is not.
type listScan struct {
	entries []scanned
}

// scan brings the knowledge of list m (of length n) up to date, and
// classifies up to ScanStep more entries of it.
func (f *Feeder) scan(ctx context.Context, m string, n int64) (*listScan, error) {
	lane, tenant, _ := splitMember(m)
	key := f.b.ListKey(lane, tenant)
	s := f.scans[m]
	if s == nil {
		s = &listScan{}
		f.scans[m] = s
	}
	if k := len(s.entries); k > 0 {
		pipe := f.b.rdb.Pipeline()
		first := pipe.LIndex(ctx, key, 0)
		last := pipe.LIndex(ctx, key, int64(k-1))
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("feeder: check %s: %w", key, err)
		}
		if first.Val() != s.entries[0].raw || last.Val() != s.entries[k-1].raw {
			s.entries = nil // moved under us (another feeder during a pause): read again
		}
	}
	from := int64(len(s.entries))
	to := min(from+int64(f.cfg.ScanStep), int64(f.cfg.ScanDepth), n)
	if to <= from {
		return s, nil
	}
	raws, err := f.b.rdb.LRange(ctx, key, from, to-1).Result()
	if err != nil {
		return nil, fmt.Errorf("feeder: read %s: %w", key, err)
	}
	add := make([]scanned, len(raws))
	var batch []Entry
	var at []int
	for i, raw := range raws {
		t, id, payload, err := decode(raw)
		add[i] = scanned{raw: raw, at: t, id: id, payload: payload, bad: err}
		if err == nil {
			batch = append(batch, Entry{Lane: lane, Tenant: tenant, RequestID: id, Payload: []byte(payload), At: t})
			at = append(at, i)
		}
	}
	if len(batch) > 0 {
		free, err := f.cfg.Classify.Free(ctx, batch)
		if err != nil {
			// Unclassified is paid: the worker still reuses what it can.
			f.log.WarnContext(ctx, "feeder: classify", "list", key, "err", err)
			free = make([]bool, len(batch))
		}
		for j, i := range at {
			add[i].free = j < len(free) && free[j]
		}
	}
	s.entries = append(s.entries, add...)
	return s, nil
}

// freeRoom is how many tasks the free window lacks.
func (f *Feeder) freeRoom(ctx context.Context) (int, error) {
	held, err := f.b.InAsynq(ctx, f.cfg.FreeQueue, time.Now().Add(f.cfg.Lead))
	if err != nil {
		return 0, fmt.Errorf("feeder: free window: %w", err)
	}
	return f.cfg.FreeWindow - int(held), nil
}

// feedFree moves up to room free entries of the scanned lists into the
// free queue, lanes in order, then tenants in order: each takes what it
// has, since none of it waits for the quota.
func (f *Feeder) feedFree(ctx context.Context, lists []string, room int, fedFrom map[string]int) (int, error) {
	fed := 0
	for _, m := range lists {
		if room <= 0 {
			break
		}
		s := f.scans[m]
		if s == nil {
			continue
		}
		var pick []int
		for i, e := range s.entries {
			if len(pick) == room {
				break
			}
			if e.free && e.bad == nil {
				pick = append(pick, i)
			}
		}
		n, err := f.feedPicked(ctx, m, s, pick, f.cfg.FreeEnqueuer, "")
		fed += n
		room -= n
		fedFrom[m] += n
		if err != nil {
			return fed, err
		}
	}
	return fed, nil
}

// feedScanned is feedList for a list the feeder has scanned: the first t.n
// entries not classified free, wherever they are in the list.
func (f *Feeder) feedScanned(ctx context.Context, t take) (int, error) {
	m := Member(t.lane, t.tenant)
	s := f.scans[m]
	if s == nil {
		return 0, nil
	}
	var pick []int
	for i, e := range s.entries {
		if len(pick) == t.n {
			break
		}
		if !e.free || e.bad != nil {
			pick = append(pick, i)
		}
	}
	return f.feedPicked(ctx, m, s, pick, f.enq, t.as)
}

// feedPicked enqueues the picked entries of s through enq, then removes
// those it enqueued from the list and from s. Failures are handled as
// feedList handles them.
func (f *Feeder) feedPicked(ctx context.Context, m string, s *listScan, pick []int, enq Enqueuer, as string) (int, error) {
	if len(pick) == 0 {
		return 0, nil
	}
	lane, tenant, _ := splitMember(m)
	key := f.b.ListKey(lane, tenant)
	var done []any
	gone := map[int]bool{}
	var ferr error
	for _, i := range pick {
		e := s.entries[i]
		err := e.bad
		var bad *BadEntryError
		if err == nil && as != "" && f.cfg.Demoter != nil {
			err = f.cfg.Demoter.Demote(ctx, tenant, e.id, as)
		}
		if err == nil {
			err = enq.Feed(ctx, e.id, []byte(e.payload))
		}
		switch {
		case err == nil:
		case e.id == "":
			if uerr := f.unreadable(ctx, e.raw); uerr != nil {
				ferr = fmt.Errorf("feeder: set aside an unreadable entry of %s: %w", key, uerr)
				break
			}
			f.log.ErrorContext(ctx, "feeder: an entry without a request id is set aside", "list", key, "kept_at", f.b.UnreadableKey(), "err", err)
		case errors.As(err, &bad):
			en := Entry{Lane: lane, Tenant: tenant, RequestID: e.id, Payload: []byte(e.payload), At: e.at}
			if derr := f.enq.Drop(ctx, en, bad); derr != nil {
				ferr = fmt.Errorf("feeder: fail the request of an entry that cannot be fed, %s: %w", e.id, errors.Join(err, derr))
				break
			}
			f.log.WarnContext(ctx, "feeder: an entry that cannot be fed failed its request", "list", key, "request_id", e.id, "err", err)
		default:
			ferr = fmt.Errorf("feeder: enqueue %s: %w", e.id, err)
		}
		if ferr != nil {
			break
		}
		done = append(done, e.raw)
		gone[i] = true
	}
	if len(done) == 0 {
		return 0, ferr
	}
	n, err := removeScript.Run(ctx, f.b.rdb, []string{key}, done...).Int()
	if err != nil {
		s.entries = nil // unknown what was removed: read again
		return 0, errors.Join(ferr, fmt.Errorf("feeder: remove fed entries of %s: %w", key, err))
	}
	kept := s.entries[:0]
	for i, e := range s.entries {
		if !gone[i] {
			kept = append(kept, e)
		}
	}
	s.entries = kept
	f.retire(ctx, m)
	return n, ferr
}

// removeScript removes each of ARGV (whole entries, each unique: its
// acceptance time and request id) from KEYS[1] once, wherever it is: a
// second feeder that fed the same entries removes nothing more.
var removeScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('LREM', KEYS[1], 1, ARGV[i])
end
return n
`)

// IndexClassifier classifies entries by whether their crop key, as known
// without reaching the image's origin, has an index entry (package
// dedup): one pipelined read of the id-only entries' records, one of the
// index.
type IndexClassifier struct {
	// Records rebuilds id-only entries' payloads (records.Store).
	Records interface {
		GetMany(ctx context.Context, ids []string) ([]status.Record, error)
	}
	// Hint is a payload's crop key known without the origin
	// (dedup.Index.HintKey); "" when results are not reused for it.
	Hint func(p tasks.CropPayload) (string, error)
	// Known reports which keys are indexed (dedup.Index.Known).
	Known func(ctx context.Context, keys []string) ([]bool, error)
}

// Free implements Classifier.
func (c IndexClassifier) Free(ctx context.Context, entries []Entry) ([]bool, error) {
	keys := make([]string, len(entries))
	var ids []string
	var idAt []int
	for i, e := range entries {
		if _, ok := idOnly(e.Payload); ok {
			ids, idAt = append(ids, e.RequestID), append(idAt, i)
			continue
		}
		var p tasks.CropPayload
		if json.Unmarshal(e.Payload, &p) != nil {
			continue
		}
		keys[i], _ = c.Hint(p)
	}
	if len(ids) > 0 {
		recs, err := c.Records.GetMany(ctx, ids)
		if err != nil {
			return nil, err
		}
		byID := make(map[string]status.Record, len(recs))
		for _, rec := range recs {
			byID[rec.RequestID] = rec
		}
		for j, id := range ids {
			if rec, ok := byID[id]; ok {
				keys[idAt[j]], _ = c.Hint(tasks.CropPayload{Version: tasks.PayloadVersion, Request: RequestOf(rec)})
			}
		}
	}
	return c.Known(ctx, keys)
}

// feedAhead scans the lists with entries, feeds up to room free entries
// into the free window, and leaves in avail, for the paid window's plan,
// how many entries of each list are not known to be free.
func (f *Feeder) feedAhead(ctx context.Context, avail map[string]int, room int) (int, error) {
	var lists []string
	for _, lane := range f.b.cfg.Lanes {
		var ts []string
		for m := range avail {
			if l, t, ok := splitMember(m); ok && l == lane {
				ts = append(ts, t)
			}
		}
		slices.Sort(ts)
		for _, t := range ts {
			lists = append(lists, Member(lane, t))
		}
	}
	for m := range f.scans {
		if _, ok := avail[m]; !ok {
			delete(f.scans, m) // emptied
		}
	}
	for _, m := range lists {
		if _, err := f.scan(ctx, m, int64(avail[m])); err != nil {
			return 0, err
		}
	}
	fed := 0
	fedFrom := map[string]int{}
	if room > 0 {
		n, err := f.feedFree(ctx, lists, room, fedFrom)
		if err != nil {
			return n, err
		}
		fed = n
	}
	for _, m := range lists {
		s := f.scans[m]
		free := 0
		for _, e := range s.entries {
			if e.free && e.bad == nil {
				free++
			}
		}
		// Entries fed above are gone from the list; the free ones left
		// wait for the free window, not for this one.
		avail[m] = max(avail[m]-fedFrom[m]-free, 0)
		if avail[m] == 0 {
			delete(avail, m)
		}
	}
	return fed, nil
}
