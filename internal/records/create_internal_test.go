package records

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// The lanes are listed once, in tasks.Priorities: the Go ranks and the
// create script's Lua table both follow it, highest first.
func TestLaneRanksFollowTasksPriorities(t *testing.T) {
	assert.Equal(t, map[string]int{"urgent": 1, "normal": 2, "backfill": 3}, laneRank)
	assert.Len(t, laneRank, len(tasks.Priorities))
	assert.Equal(t, `{["urgent"] = 1, ["normal"] = 2, ["backfill"] = 3}`, laneRankLua())
	recs := []status.Record{{Params: tasks.Params{Priority: "normal"}}, {Params: tasks.Params{Priority: "urgent"}}, {Params: tasks.Params{Priority: "backfill"}}}
	assert.Equal(t, "normal", lowestLane(recs, []int{0, 1}))
	assert.Equal(t, "backfill", lowestLane(recs, []int{1, 2, 0}))
}
