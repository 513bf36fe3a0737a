package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// shellStep is one command of a documented example and the answer shown
// under it ("" when none is shown).
type shellStep struct {
	cmd, want string
}

// shellSteps returns the steps of the ```sh blocks of a Markdown file of
// the repository (path from its root) that call the HTTP API ($API):
// lines up to an answer line (one starting with "{") form one command;
// export lines of API and TOKEN are the test's to set.
func shellSteps(t *testing.T, path string) []shellStep {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(path)))
	require.NoError(t, err)
	var (
		steps   []shellStep
		inBlock bool
		block   []string
	)
	flush := func() {
		if !strings.Contains(strings.Join(block, "\n"), "$API/") {
			return
		}
		var cmd []string
		for _, line := range block {
			switch {
			case strings.HasPrefix(line, "export API="):
			case strings.HasPrefix(line, "{"):
				steps = append(steps, shellStep{cmd: strings.Join(cmd, "\n"), want: line})
				cmd = nil
			default:
				cmd = append(cmd, line)
			}
		}
		if strings.TrimSpace(strings.Join(cmd, "")) != "" {
			steps = append(steps, shellStep{cmd: strings.Join(cmd, "\n")})
		}
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !inBlock && line == "```sh":
			inBlock, block = true, nil
		case inBlock && line == "```":
			inBlock = false
			flush()
		case inBlock:
			block = append(block, line)
		}
	}
	return steps
}

// subset reports whether every field of want is in got with the same
// value (objects recursively, arrays element by element).
func subset(want, got any) bool {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range w {
			if !subset(v, g[k]) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !subset(w[i], g[i]) {
				return false
			}
		}
		return true
	default:
		return want == got
	}
}

// The shell examples of the HTTP API in docs/ work as shown, as the
// README's do (each page against its own `cropq api`).
func TestDocsShellExamples(t *testing.T) {
	for _, page := range []string{"docs/http-api.md", "docs/reports.md", "docs/budgets-and-replays.md"} {
		t.Run(page, func(t *testing.T) {
			steps := shellSteps(t, page)
			require.NotEmpty(t, steps, "%s has HTTP examples", page)
			runShellSteps(t, steps)
		})
	}
}

// runShellSteps runs steps in bash against a real `cropq api`, and checks
// each answer holds every field shown.
func runShellSteps(t *testing.T, steps []shellStep) {
	t.Helper()
	f := newFrontDoor(t)
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	for i, st := range steps {
		cmd := exec.Command(bash, "-euo", "pipefail", "-c", st.cmd)
		cmd.Env = append(os.Environ(), "API="+f.base, "TOKEN="+frontDoorToken)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "step %d: %s\n%s", i, st.cmd, out)
		if st.want == "" {
			continue
		}
		var want, got any
		require.NoError(t, json.Unmarshal([]byte(st.want), &want), "the README's answer of step %d is JSON", i)
		require.NoError(t, json.Unmarshal(out, &got), "step %d answered JSON: %s", i, out)
		assert.True(t, subset(want, got), "step %d: %s\nREADME shows: %s\ngot:          %s", i, st.cmd, st.want, out)
	}
}
