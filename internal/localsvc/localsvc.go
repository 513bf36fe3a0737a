// Package localsvc starts real local servers (redis-server, MinIO) as child
// processes on free loopback ports, for `cropq-dev dev` and the tests. It knows
// nothing of testing; package testenv wraps it for tests.
package localsvc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// NotInstalledError says a server binary is missing and how to install it.
type NotInstalledError struct {
	Name        string
	InstallHint string
}

func (e *NotInstalledError) Error() string {
	return fmt.Sprintf("%s not found on PATH or in .tools/bin: %s", e.Name, e.InstallHint)
}

var installHints = map[string]string{
	"redis-server": "run `make tools` (scripts/install-tools.sh), or `apt-get install redis-server`",
	"minio":        "run `make tools` (scripts/install-tools.sh builds MinIO into .tools/bin)",
	"redis-cli":    "run `make tools` (scripts/install-tools.sh), or `apt-get install redis-tools`",
	"chromium":     "run `make tools` (scripts/install-tools.sh installs Debian's chromium), or `apt-get install chromium`",
}

// FindBinary looks for name on PATH, then in each of extraDirs, then in
// .tools/bin of the enclosing Go module (the project's own install dir).
func FindBinary(name string, extraDirs ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dirs := append([]string{}, extraDirs...)
	if root, err := RepoRoot(); err == nil {
		dirs = append(dirs, filepath.Join(root, ".tools", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	hint := installHints[name]
	if hint == "" {
		hint = "install it"
	}
	return "", &NotInstalledError{Name: name, InstallHint: hint}
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// process is one child server, restartable on the same arguments.
type process struct {
	name    string
	bin     string
	args    []string
	env     []string
	logPath string
	// ready reports whether the server answers, and is the one with this
	// pid rather than another that holds the port.
	ready func(ctx context.Context, pid int) error

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current cmd has been waited for
}

// Start starts the process (again) and waits until it is ready.
func (p *process) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		return fmt.Errorf("%s: already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a signal to the group reaches any children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.mu.Unlock()
		return fmt.Errorf("%s: start: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()

	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		// Each probe gets its own short deadline: a port holder that accepts
		// but never answers must not use up the whole start-up window.
		pctx, cancelProbe := context.WithTimeout(rctx, 2*time.Second)
		err := p.ready(pctx, cmd.Process.Pid)
		cancelProbe()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			p.clear(cmd)
			return &ExitedError{Name: p.name, LogPath: p.logPath}
		case <-rctx.Done():
			_ = p.Kill()
			return fmt.Errorf("%s not ready: %w; see %s", p.name, rctx.Err(), p.logPath)
		case <-tick.C:
		}
	}
}

func (p *process) clear(cmd *exec.Cmd) {
	p.mu.Lock()
	if p.cmd == cmd {
		p.cmd, p.done = nil, nil
	}
	p.mu.Unlock()
}

// Stop sends SIGTERM and waits; SIGKILL when ctx ends first (or after 10s).
func (p *process) Stop(ctx context.Context) error {
	return p.signal(ctx, syscall.SIGTERM)
}

// Kill stops the process at once, as a crash would.
func (p *process) Kill() error {
	return p.signal(context.Background(), syscall.SIGKILL)
}

func (p *process) signal(ctx context.Context, sig syscall.Signal) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	p.clear(cmd)
	return nil
}

func portString(port int) string { return strconv.Itoa(port) }

// ExitedError says a server exited before it was ready, often because its
// port was taken between FreePort and the bind.
type ExitedError struct {
	Name, LogPath string
}

func (e *ExitedError) Error() string {
	return fmt.Sprintf("%s exited during start-up; see %s", e.Name, e.LogPath)
}

// startOnFreePort runs start with ports from FreePort, again on fresh ones
// if the server exits during start-up: another process may take a port
// between FreePort closing it and the server binding it.
func startOnFreePort[T any](start func(port int) (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 3 {
		var port int
		if port, err = FreePort(); err != nil {
			return v, err
		}
		v, err = start(port)
		if _, exited := errors.AsType[*ExitedError](err); !exited {
			return v, err
		}
	}
	return v, err
}
