package records

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// Each transition a worker makes has its constructor; the Update it builds
// is what Apply then checks.
func TestUpdateConstructors(t *testing.T) {
	seed := &status.Record{RequestID: "r1", Params: tasks.Params{BatchID: "b"}}
	by := By{Attempt: 3, Task: "r1~rescue-2", Seed: seed}
	cp := &status.Checkpoint{ResultURL: "https://r"}
	take := &Takeover{From: "r1", Attempt: 2}
	for name, tc := range map[string]struct{ got, want Update }{
		"start":      {by.Start(take), Update{To: status.Running, Attempt: 3, Task: "r1~rescue-2", Takeover: take, Seed: seed}},
		"checkpoint": {by.Checkpoint(cp, 1, true), Update{To: status.Cropped, Attempt: 3, Task: "r1~rescue-2", Checkpoint: cp, PaidUsage: 1, ClearCheckpoint: true}},
		"succeed":    {by.Succeed(status.Stored{Key: "k"}), Update{To: status.Succeeded, Attempt: 3, Task: "r1~rescue-2", Stored: &status.Stored{Key: "k"}}},
		"reuse":      {by.Reuse(status.Stored{Key: "k"}, "r0"), Update{To: status.Succeeded, Attempt: 3, Task: "r1~rescue-2", Stored: &status.Stored{Key: "k"}, ReusedFrom: "r0"}},
		"retry":      {by.Fail(false, "500", "m"), Update{To: status.Retrying, Attempt: 3, Task: "r1~rescue-2", ErrorCode: "500", ErrorMessage: "m", Seed: seed}},
		"fail":       {by.Fail(true, "700", "m"), Update{To: status.Failed, Attempt: 3, Task: "r1~rescue-2", ErrorCode: "700", ErrorMessage: "m", Seed: seed}},
		"attach": {Attach(status.Record{State: status.Retrying, Attempt: 4, ErrorCode: "storage_upload", ErrorMessage: "m"}, cp, 1),
			Update{To: status.Retrying, Attempt: 4, ErrorCode: "storage_upload", ErrorMessage: "m", Checkpoint: cp, PaidUsage: 1}},
	} {
		assert.Equal(t, tc.want, tc.got, name)
	}
}
