package localstack_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/localstack"
)

func TestStackStopsInReverseOrderAndJoinsErrors(t *testing.T) {
	s := localstack.New(t.TempDir())
	var order []string
	boom := errors.New("boom")
	s.OnStop(func() error { order = append(order, "first"); return nil })
	s.OnStop(func() error { order = append(order, "second"); return boom })
	require.ErrorIs(t, s.Stop(), boom)
	assert.Equal(t, []string{"second", "first"}, order)
	require.NoError(t, s.Stop(), "a second Stop has nothing left to stop")
}

func TestServeAnswersUntilTheStackStops(t *testing.T) {
	s := localstack.New(t.TempDir())
	url, err := s.Serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, localstack.AwaitHTTP(ctx, url))
	require.NoError(t, s.Stop())

	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = localstack.AwaitHTTP(ctx, url)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), url+" never answered")
}

func shell(t *testing.T) string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	return sh
}

func TestProcessGetsItsEnvironmentLastValueWinning(t *testing.T) {
	var out bytes.Buffer
	p, err := localstack.Start(localstack.Command{Bin: shell(t), Args: []string{"-c", "echo $CROPQ_TEST_VALUE"},
		Env: []string{"CROPQ_TEST_VALUE=first", "CROPQ_TEST_VALUE=last"}, Stdout: &out})
	require.NoError(t, err)
	<-p.Done()
	require.NoError(t, p.Stop(context.Background()), "stopping an exited process says how it exited")
	assert.Equal(t, "last\n", out.String())
}

// readyWriter closes ready on the first write: the script has set its trap.
type readyWriter struct{ ready chan struct{} }

func (w *readyWriter) Write(p []byte) (int, error) {
	select {
	case <-w.ready:
	default:
		close(w.ready)
	}
	return len(p), nil
}

// startTrapping starts a shell that traps SIGTERM with action, and waits
// until the trap is set.
func startTrapping(t *testing.T, action string) *localstack.Process {
	t.Helper()
	w := &readyWriter{ready: make(chan struct{})}
	p, err := localstack.Start(localstack.Command{Bin: shell(t), Args: []string{"-c", `trap '` + action + `' TERM; echo ready; while :; do sleep 0.05; done`},
		Stdout: w})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Cmd.Process.Kill(); <-p.Done() })
	select {
	case <-w.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the shell never set its trap")
	}
	return p
}

func TestStopAllTerminatesAndKillsWhatIgnoresSIGTERM(t *testing.T) {
	polite, stubborn := startTrapping(t, "exit 0"), startTrapping(t, "")

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := localstack.StopAll(ctx, polite, stubborn)
	require.Error(t, err, "the stubborn one was killed")
	assert.True(t, strings.Contains(err.Error(), "killed"), "%v", err)
	assert.NoError(t, polite.Stop(context.Background()), "the polite one exited 0 on SIGTERM")
}

func TestStartOfAMissingBinaryFails(t *testing.T) {
	_, err := localstack.Start(localstack.Command{Bin: "/nonexistent/cropq"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "start cropq")
}
