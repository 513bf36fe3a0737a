package records

import (
	"time"

	"github.com/cropq/cropq/status"
)

// allowed lists the transitions; a new attempt may start from any
// non-terminal state (a crash can leave a record anywhere).
var allowed = map[status.State][]status.State{
	status.Queued:   {status.Running, status.Failed, status.Canceled},
	status.Running:  {status.Running, status.Cropped, status.Retrying, status.Succeeded, status.Failed},
	status.Retrying: {status.Running, status.Retrying, status.Failed},
	status.Cropped:  {status.Running, status.Cropped, status.Retrying, status.Succeeded, status.Failed},
}

func canMove(from, to status.State) bool {
	for _, s := range allowed[from] {
		if s == to {
			return true
		}
	}
	return false
}

// owns refuses, as stale, an update from a task that does not own the
// request: a frozen or partitioned worker whose crop was rescued must not
// write over the task that runs it now.
func owns(rec status.Record, u Update) error {
	if u.Task == "" || u.To == status.Canceled || u.Task == rec.Task {
		return nil
	}
	if t := u.Takeover; t != nil {
		if u.To == status.Running && (rec.Task == "" || rec.Task == t.From) && rec.Attempt <= t.Attempt {
			return nil
		}
		return ErrStaleAttempt
	}
	if rec.Task != "" {
		return ErrStaleAttempt // a rescue took the request from this task
	}
	return nil
}

// Apply applies u to rec at now, as Store.Transition does inside its
// transaction: the ownership, attempt order and state machine rules, then
// the update itself, keeping at most historyLimit history entries (all when
// it is 0). A refusal (ErrStaleAttempt, *TransitionError) leaves rec
// unchanged. It is pure, so that in-memory stores (package
// worker/workertest) follow the same rules as the Redis one.
func Apply(rec *status.Record, u Update, now time.Time, historyLimit int) error {
	if u.Replay {
		return replay(rec, now, historyLimit)
	}
	if u.To == status.Canceled {
		u.Attempt = rec.Attempt // a cancel is no attempt of its own
	}
	if err := owns(*rec, u); err != nil {
		return err
	}
	if u.Attempt < rec.Attempt {
		return ErrStaleAttempt
	}
	if !canMove(rec.State, u.To) {
		return &status.TransitionError{RequestID: rec.RequestID, From: rec.State, To: u.To}
	}
	now = now.UTC()
	rec.State = u.To
	rec.Attempt = u.Attempt
	rec.UpdatedAt = now
	if u.Task != "" && u.Takeover != nil {
		rec.Task = u.Task
	}
	switch u.To {
	case status.Retrying, status.Failed:
		rec.ErrorCode, rec.ErrorMessage = u.ErrorCode, u.ErrorMessage
	case status.Succeeded:
		rec.ErrorCode, rec.ErrorMessage = "", ""
	}
	if u.ClearCheckpoint {
		if u.Checkpoint != nil && rec.Checkpoint != nil {
			rec.ExpiredRecrops++
		}
		rec.Checkpoint = nil
	}
	if u.Checkpoint != nil {
		cp := *u.Checkpoint
		rec.Checkpoint = &cp
		rec.PaidCalls++
		rec.Usage += u.PaidUsage
	}
	if u.Stored != nil {
		st := *u.Stored
		rec.Stored = &st
		rec.Checkpoint = nil // stored: the URL is no longer needed
	}
	if u.ReusedFrom != "" {
		rec.ReusedFrom = u.ReusedFrom
	}
	if u.Unchanged {
		rec.Unchanged = true
	}
	rec.History = append(rec.History, status.Transition{State: u.To, At: now, Attempt: u.Attempt, ErrorCode: u.ErrorCode, Message: u.ErrorMessage})
	if n := len(rec.History) - historyLimit; historyLimit > 0 && n > 0 {
		rec.History = append(rec.History[:0:0], rec.History[n:]...)
	}
	return nil
}

// replay applies a Replay update: failed back to queued, a new attempt
// series, the history kept.
func replay(rec *status.Record, now time.Time, historyLimit int) error {
	if rec.State != status.Failed {
		return &status.TransitionError{RequestID: rec.RequestID, From: rec.State, To: status.Queued}
	}
	now = now.UTC()
	rec.Replays++
	rec.State, rec.Attempt, rec.Task, rec.UpdatedAt = status.Queued, 0, "", now
	rec.ErrorCode, rec.ErrorMessage = "", ""
	rec.History = append(rec.History, status.Transition{State: status.Queued, At: now, Replay: rec.Replays})
	if n := len(rec.History) - historyLimit; historyLimit > 0 && n > 0 {
		rec.History = append(rec.History[:0:0], rec.History[n:]...)
	}
	return nil
}
