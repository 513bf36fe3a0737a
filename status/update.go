package status

// By names who makes a change: an attempt of a task. Its methods build the
// Update of each transition a worker makes, so that no call site assembles
// the optional fields of an Update by hand.
type By struct {
	Attempt int    // 1-based attempt number on the record
	Task    string // asynq task id; "" is not fenced by task (see Update.Task)
}

// Start moves the request to running. A rescue task passes the attempt it
// takes over (nil otherwise).
func (b By) Start(takeover *Takeover) Update {
	return Update{To: Running, Attempt: b.Attempt, Task: b.Task, Takeover: takeover}
}

// Checkpoint records a paid answer, billed usage; replacesExpired says it
// replaces a checkpoint whose URL expired (counted as an expired re-crop).
func (b By) Checkpoint(cp *Checkpoint, usage int, replacesExpired bool) Update {
	return Update{To: Cropped, Attempt: b.Attempt, Task: b.Task, Checkpoint: cp, PaidUsage: usage, ClearCheckpoint: replacesExpired}
}

// Succeed records where the result landed.
func (b By) Succeed(st Stored) Update {
	return Update{To: Succeeded, Attempt: b.Attempt, Task: b.Task, Stored: &st}
}

// Reuse records a result copied from request from's stored one, unpaid.
func (b By) Reuse(st Stored, from string) Update {
	return Update{To: Succeeded, Attempt: b.Attempt, Task: b.Task, Stored: &st, ReusedFrom: from}
}

// Fail records why the attempt stopped: failed when final, else retrying.
func (b By) Fail(final bool, code, message string) Update {
	to := Retrying
	if final {
		to = Failed
	}
	return Update{To: to, Attempt: b.Attempt, Task: b.Task, ErrorCode: code, ErrorMessage: message}
}

// Attach attaches a paid answer to rec without moving it: its state,
// attempt and error stay (a worker recording an answer Redis refused
// earlier, whichever attempt owns the request now).
func Attach(rec Record, cp *Checkpoint, usage int) Update {
	return Update{To: rec.State, Attempt: rec.Attempt, ErrorCode: rec.ErrorCode, ErrorMessage: rec.ErrorMessage, Checkpoint: cp, PaidUsage: usage}
}
