package producer

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cropq/cropq/internal/backlog"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// ReplayFilter chooses failed requests to send again; zero fields choose
// all. Until is exclusive.
type ReplayFilter struct {
	Tenant  string    `json:"tenant,omitempty"`
	BatchID string    `json:"batchId,omitempty"`
	Code    string    `json:"code,omitempty"`
	Since   time.Time `json:"since,omitzero"`
	Until   time.Time `json:"until,omitzero"`
}

// ReplayResult counts what a replay did (or, dry, would do).
type ReplayResult struct {
	// Matched failed requests the filter chose.
	Matched int `json:"matched"`
	// Replayed went back to queued, each in its own lane and tenant.
	Replayed int `json:"replayed"`
	// Skipped were no longer failed when their turn came (replayed
	// meanwhile, by another replay or this one twice): nothing done.
	Skipped int `json:"skipped"`
	// NotReplayable cannot be sent again: a base64 image whose bytes are
	// gone (claim-checked images are removed once a request ends, and its
	// task no longer holds it).
	NotReplayable int `json:"notReplayable"`
	// PaidCalls the matched requests cost before they failed.
	PaidCalls int64 `json:"paidCalls"`
}

// ReplayAudit is one replay as kept in Redis (the last 1,000) and logged.
type ReplayAudit struct {
	At     time.Time    `json:"at"`
	By     string       `json:"by"`
	Filter ReplayFilter `json:"filter"`
	DryRun bool         `json:"dryRun"`
	ReplayResult
}

// ReplaysKey is the list of the last replays (ReplayAudit, JSON).
func (p *Producer) ReplaysKey() string {
	return rediskey.Prefix(p.cfg.Status.Prefix).OrDefault().Replays()
}

// Replay sends again the failed requests f chooses: each goes back to
// queued in its own lane and tenant, keeps its request id and its history
// (a new attempt series), and its batch's counts move back. A request
// whose crop became available meanwhile is not paid for again (result
// reuse, and a checkpoint that still lives, as for any request). With
// dryRun, nothing changes: the result says how many would be sent. by
// names who asked (kept with the replay in Redis and in the log). It
// needs Config.Backlog.
func (p *Producer) Replay(ctx context.Context, f ReplayFilter, dryRun bool, by string) (ReplayResult, error) {
	if p.backlog == nil && !dryRun {
		return ReplayResult{}, errors.New("producer: replay needs the backlog (Config.Backlog)")
	}
	var matched []records.Failure
	var res ReplayResult
	err := p.statuses.Failures(ctx, records.FailureFilter{Tenant: f.Tenant, BatchID: f.BatchID, Code: f.Code, Since: f.Since, Until: f.Until},
		func(x records.Failure) bool {
			matched = append(matched, x)
			res.PaidCalls += int64(x.Paid)
			return true
		})
	if err != nil {
		return ReplayResult{}, err
	}
	res.Matched = len(matched)
	// Newest first: each failure's report line is then near the tail of
	// its batch's report, where the replay looks for it.
	slices.Reverse(matched)
	if !dryRun {
		var replayed, skipped, notReplayable atomic.Int64
		var firstErr error
		var mu sync.Mutex
		sem := make(chan struct{}, p.cfg.Concurrency)
		var wg sync.WaitGroup
		for _, x := range matched {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				switch err := p.replayOne(ctx, x.RequestID); {
				case err == nil:
					replayed.Add(1)
				case errors.Is(err, errNotReplayable):
					notReplayable.Add(1)
				case errors.As(err, new(*status.TransitionError)), errors.Is(err, status.ErrNotFound):
					skipped.Add(1)
				default:
					mu.Lock()
					firstErr = cmp.Or(firstErr, fmt.Errorf("replay %s: %w", x.RequestID, err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		res.Replayed, res.Skipped, res.NotReplayable = int(replayed.Load()), int(skipped.Load()), int(notReplayable.Load())
		err = errors.Join(firstErr, ctx.Err())
	}
	audit := ReplayAudit{At: time.Now().UTC(), By: by, Filter: f, DryRun: dryRun, ReplayResult: res}
	if b, jerr := json.Marshal(audit); jerr == nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		pipe := p.rdb.Pipeline()
		pipe.RPush(actx, p.ReplaysKey(), b)
		pipe.LTrim(actx, p.ReplaysKey(), -1000, -1)
		if _, aerr := pipe.Exec(actx); aerr != nil {
			p.cfg.Logger.WarnContext(ctx, "producer: keep the replay's audit", "err", aerr)
		}
		cancel()
	}
	p.cfg.Logger.InfoContext(ctx, "producer: replay", "by", by, "dry_run", dryRun, "tenant", f.Tenant, "batch_id", f.BatchID, "code", f.Code,
		"since", f.Since, "until", f.Until, "matched", res.Matched, "replayed", res.Replayed, "skipped", res.Skipped, "not_replayable", res.NotReplayable)
	return res, err
}

// Replays returns the last replays, newest first (at most n).
func (p *Producer) Replays(ctx context.Context, n int) ([]ReplayAudit, error) {
	raws, err := p.rdb.LRange(ctx, p.ReplaysKey(), int64(-n), -1).Result()
	if err != nil {
		return nil, fmt.Errorf("producer: replays: %w", err)
	}
	out := make([]ReplayAudit, 0, len(raws))
	for i := len(raws) - 1; i >= 0; i-- {
		var a ReplayAudit
		if json.Unmarshal([]byte(raws[i]), &a) == nil {
			out = append(out, a)
		}
	}
	return out, nil
}

var errNotReplayable = errors.New("producer: the request's image is gone: it cannot be sent again")

// replayOne sends one failed request again: its backlog entry is the
// payload its archived task still holds (exactly what was accepted), or,
// for an image URL, its id alone (the feeder rebuilds the task from the
// record, as for any id-only entry).
func (p *Producer) replayOne(ctx context.Context, id string) error {
	rec, err := p.statuses.Get(ctx, id)
	if err != nil {
		return err
	}
	if rec.State != status.Failed {
		return &status.TransitionError{RequestID: id, From: rec.State, To: status.Queued}
	}
	var payload []byte
	if info, err := p.insp.GetTaskInfo(p.cfg.Task.Queue, id); err == nil && info.State == asynq.TaskStateArchived {
		if cp, perr := tasks.ParseCropPayload(info.Payload); perr == nil && cp.RequestID == id && cp.Input == nil {
			payload = info.Payload
		}
	}
	if payload == nil && rec.SourceURL == "" {
		return errNotReplayable
	}
	lane, tenant := rec.Priority, rec.Tenant
	entry := backlog.Encode(backlog.Entry{Lane: lane, Tenant: tenant, RequestID: id, Payload: payload, BatchID: rec.BatchID, At: time.Now()})
	_, err = p.statuses.Transition(ctx, id, records.Replay(records.Append{List: p.backlog.ListKey(lane, tenant), Value: entry,
		Set: p.backlog.ActiveKey(), Member: backlog.Member(lane, tenant)}))
	return err
}
