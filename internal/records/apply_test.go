package records

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/status"
)

// Package status promises pipelines the moves a record can make, in its
// doc; the moves Apply allows must be exactly those.
func TestStatusDocListsTheAllowedMoves(t *testing.T) {
	src, err := os.ReadFile("../../status/record.go")
	require.NoError(t, err)
	documented := map[status.State][]status.State{}
	line := regexp.MustCompile(`(?m)^//\t(\w+)\s+→ (.+)$`)
	for _, m := range line.FindAllStringSubmatch(string(src), -1) {
		for to := range strings.SplitSeq(m[2], ",") {
			to, _, _ = strings.Cut(strings.TrimSpace(to), " (") // "running (a new attempt)"
			documented[status.State(m[1])] = append(documented[status.State(m[1])], status.State(to))
		}
	}
	assert.Equal(t, allowed, documented)
}
