package status_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
)

func TestTerminalStates(t *testing.T) {
	for st, terminal := range map[status.State]bool{
		status.Queued: false, status.Running: false, status.Retrying: false, status.Cropped: false,
		status.Succeeded: true, status.Failed: true, status.Canceled: true,
	} {
		assert.Equal(t, terminal, st.Terminal(), st)
	}
}

// The events key follows the prefix the fleet is configured with, so a
// pipeline reads the stream the workers write.
func TestEventsKeyFollowsThePrefix(t *testing.T) {
	assert.Equal(t, rediskey.Default.Events(), status.Config{}.EventsKey())
	assert.Equal(t, "shop-a:events", status.Config{Prefix: "shop-a:"}.EventsKey())
}

func TestCheckpointUsable(t *testing.T) {
	var none *status.Checkpoint
	assert.False(t, none.Usable())
	assert.False(t, (&status.Checkpoint{}).Usable())
	assert.True(t, (&status.Checkpoint{ResultURL: "https://oss.example/r.png"}).Usable())
}
