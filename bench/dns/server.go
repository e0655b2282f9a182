package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// apiServer is the `skiff server --disable-agent` whose Services both DNS
// servers serve. It lives in a temp dir of its own; close stops it by PID
// and removes the dir.
type apiServer struct {
	dir     string
	dataDir string
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *os.File
}

var readyLine = regexp.MustCompile(`ready in ([0-9.]+s)`)

// startAPIServer execs bin on free loopback ports and waits for its ready
// line. On error the server is already stopped and its dir removed.
func startAPIServer(ctx context.Context, bin, tmp string) (*apiServer, error) {
	dir, err := os.MkdirTemp(tmp, "server-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	s := &apiServer{dir: dir, dataDir: filepath.Join(dir, "data"), exited: make(chan struct{})}
	if err := s.start(ctx, bin); err != nil {
		tail := s.tail()
		s.close()
		return nil, fmt.Errorf("%w\nlast server output:\n%s", err, tail)
	}
	return s, nil
}

func (s *apiServer) start(ctx context.Context, bin string) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	// The embedded etcd takes the client port and the one after it (peer).
	etcd, err := freeRun(2)
	if err != nil {
		return err
	}
	if s.log, err = os.Create(filepath.Join(s.dir, "server.log")); err != nil {
		return fmt.Errorf("create server log: %w", err)
	}
	pr, pw := io.Pipe()
	s.cmd = exec.Command(bin, "server", "--data-dir", s.dataDir,
		"--https-port", strconv.Itoa(ports[0]), "--etcd-port", strconv.Itoa(etcd), "--disable-agent")
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		close(s.exited)
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	go func() {
		s.cmd.Wait()
		pw.Close()
		close(s.exited)
	}()
	ready := make(chan struct{})
	go s.copyOutput(pr, ready)
	select {
	case <-ready:
		return nil
	case <-s.exited:
		return fmt.Errorf("skiff server exited before ready: %v", s.cmd.ProcessState)
	case <-time.After(3 * time.Minute):
		return errors.New("skiff server not ready after 3m")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *apiServer) copyOutput(r io.Reader, ready chan<- struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var once sync.Once
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(s.log, line)
		if readyLine.MatchString(line) && strings.Contains(line, "kubeconfig") {
			once.Do(func() { close(ready) })
		}
	}
}

func (s *apiServer) kubeconfig() string { return filepath.Join(s.dataDir, "kubeconfig") }

func (s *apiServer) tail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "server.log"))
	if err != nil {
		return "(no output)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// close stops the server (SIGTERM, SIGKILL after 20 s) and removes its dir.
func (s *apiServer) close() {
	stop(s.cmd, s.exited)
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.dir)
}

// stop ends one process this program started, by its PID: SIGTERM, then
// SIGKILL if it has not exited 20 s later. exited closes when it is reaped.
func stop(cmd *exec.Cmd, exited <-chan struct{}) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}
