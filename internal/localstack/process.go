package localstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cropq/cropq/internal/localsvc"
)

// StopTimeout is how long a stack waits for one of its processes to exit
// after SIGTERM before it kills it: more than the CROPQ_SHUTDOWN_TIMEOUT
// that Env sets.
const StopTimeout = 15 * time.Second

// Command is a process to start: a cropq binary and its arguments.
type Command struct {
	Bin  string
	Args []string
	// Env is added to this process's own environment; of names given more
	// than once, the last value wins (os/exec).
	Env []string
	// Stdout and Stderr receive its output; nil discards it.
	Stdout, Stderr io.Writer
}

// Process is a started process.
type Process struct {
	// Cmd is the started command: its Process is there for pids and for
	// signals such as a crash's SIGKILL.
	Cmd  *exec.Cmd
	done chan struct{}
	err  error // how it exited, once done is closed
}

// Start starts c without waiting for it to be ready (see AwaitHTTP).
func Start(c Command) (*Process, error) {
	cmd := exec.Command(c.Bin, c.Args...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Stdout, cmd.Stderr = c.Stdout, c.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(c.Bin), err)
	}
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Done is closed once the process has exited (and its output is written).
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits for the process to exit, killing it when
// ctx ends first. It returns how the process exited (nil for status 0);
// stopping a process that has exited only returns that.
func (p *Process) Stop(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// Build builds the commands named (cmd/<name> of this module) into dir,
// as dir/<name>.
func Build(ctx context.Context, dir string, names ...string) error {
	root, err := localsvc.RepoRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	build := exec.CommandContext(ctx, "go", args...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(names, " "), err, out)
	}
	return nil
}

// StopAll sends SIGTERM to every process at once, then stops each as Stop
// does: processes that drain side by side stop in the time of one.
func StopAll(ctx context.Context, ps ...*Process) error {
	for _, p := range ps {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	}
	var errs []error
	for _, p := range ps {
		errs = append(errs, p.Stop(ctx))
	}
	return errors.Join(errs...)
}
