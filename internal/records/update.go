package records

import (
	"errors"

	"github.com/cropq/cropq/status"
)

// By names who makes a change: an attempt of a task. Its methods build the
// Update of each transition a worker makes, so that no call site assembles
// the optional fields of an Update by hand.
type By struct {
	Attempt int    // 1-based attempt number on the record
	Task    string // asynq task id; "" is not fenced by task (see Update.Task)
	// Seed is the request as the task describes it (Update.Seed): its
	// record is written again from it if Redis lost it.
	Seed *status.Record
}

// Start moves the request to running. A rescue task passes the attempt it
// takes over (nil otherwise).
func (b By) Start(takeover *Takeover) Update {
	return Update{To: status.Running, Attempt: b.Attempt, Task: b.Task, Takeover: takeover, Seed: b.Seed}
}

// Checkpoint records a paid answer, billed usage; replacesExpired says it
// replaces a checkpoint whose URL expired (counted as an expired re-crop).
func (b By) Checkpoint(cp *status.Checkpoint, usage int, replacesExpired bool) Update {
	return Update{To: status.Cropped, Attempt: b.Attempt, Task: b.Task, Checkpoint: cp, PaidUsage: usage, ClearCheckpoint: replacesExpired}
}

// Succeed records where the result landed.
func (b By) Succeed(st status.Stored) Update {
	return Update{To: status.Succeeded, Attempt: b.Attempt, Task: b.Task, Stored: &st}
}

// Reuse records a result copied from request from's stored one, unpaid.
func (b By) Reuse(st status.Stored, from string) Update {
	return Update{To: status.Succeeded, Attempt: b.Attempt, Task: b.Task, Stored: &st, ReusedFrom: from}
}

// Unchanged records a request whose destination already held the crop it
// asks for (from's result, at st): succeeded without a copy or a write.
func (b By) Unchanged(st status.Stored, from string) Update {
	return Update{To: status.Succeeded, Attempt: b.Attempt, Task: b.Task, Stored: &st, ReusedFrom: from, Unchanged: true}
}

// Fail records why the attempt stopped: failed when final, else retrying.
func (b By) Fail(final bool, code, message string) Update {
	to := status.Retrying
	if final {
		to = status.Failed
	}
	return Update{To: to, Attempt: b.Attempt, Task: b.Task, ErrorCode: code, ErrorMessage: message, Seed: b.Seed}
}

// Attach attaches a paid answer to rec without moving it: its state,
// attempt and error stay (a worker recording an answer Redis refused
// earlier, whichever attempt owns the request now).
func Attach(rec status.Record, cp *status.Checkpoint, usage int) Update {
	return Update{To: rec.State, Attempt: rec.Attempt, ErrorCode: rec.ErrorCode, ErrorMessage: rec.ErrorMessage, Checkpoint: cp, PaidUsage: usage}
}

// Update is one transition request.
type Update struct {
	To      status.State
	Attempt int // the attempt making the change; older than the record's → ErrStaleAttempt

	ErrorCode    string
	ErrorMessage string

	Checkpoint      *status.Checkpoint // set the checkpoint (a paid call succeeded)
	ClearCheckpoint bool               // forget the checkpoint (its URL expired)
	PaidUsage       int                // usage billed by the call that made Checkpoint
	Stored          *status.Stored

	// Task is the asynq task making the change; when set, it must own the
	// request (Record.Task), or take it over through Takeover.
	Task string
	// Takeover, on a rescued task's move to Running, takes the request from
	// the task it rescued, unless that task (or any other) has moved on
	// past the attempt that was rescued.
	Takeover *Takeover
	// ReusedFrom, with Stored, records that the result was reused from
	// that request's (no paid call).
	ReusedFrom string
	// Unchanged, with Stored, records that the destination already held
	// the crop: nothing was copied or written.
	Unchanged bool
	// Seed, on a move to running or failed, is the request whose record
	// is written again (queued, accepted at its CreatedAt, then moved) if
	// Redis lost it: what a task's payload or a backlog entry carries
	// (id, batch, tenant, parameters), so that the record and its batch's
	// counts tell the truth. Ignored while the record exists.
	Seed *status.Record
	// Replay moves a failed request back to queued, to be sent again: a
	// new attempt series (Attempt 0, Record.Replays one more), its error
	// cleared and its history kept. Refused (*status.TransitionError) from
	// any other state, so that a request replayed twice is queued once.
	Replay bool
	// Append, when set, is applied with the transition (on one Redis
	// primary, in the same transaction): a replayed request's backlog
	// entry.
	Append *Append
}

// Replay is the Update that sends a failed request again, its backlog
// entry app appended with it.
func Replay(app Append) Update { return Update{To: status.Queued, Replay: true, Append: &app} }

// ErrStaleAttempt refuses an update from an attempt older than the record's,
// or from a task that no longer owns the request.
var ErrStaleAttempt = errors.New("status: update from an older attempt")

// Takeover names what a rescue task replaces: the task whose lease expired
// and the attempt it was running.
type Takeover struct {
	From    string
	Attempt int
}
