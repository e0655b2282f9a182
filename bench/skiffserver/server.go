// Package skiffserver starts the `skiff server --disable-agent` process that
// the benchmarks under bench/ measure or build on, so that each of them
// starts, watches and stops it the same way: in a temp dir of its own, on
// free loopback ports, with its output kept for the failure message.
package skiffserver

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

// killAfter is how long Close waits after SIGTERM before SIGKILL: long
// enough for the server to stop its embedded etcd cleanly.
const killAfter = 20 * time.Second

// readyLine is the line the server prints once its API answers; the
// benchmarks start only then. It must also name the kubeconfig, which the
// server writes just before.
var readyLine = regexp.MustCompile(`ready in ([0-9.]+s)`)

// Server is one `skiff server --disable-agent` process a benchmark started.
// Close stops it by its PID and removes its temp dir, whatever happened.
type Server struct {
	DataDir   string // the server's --data-dir, inside its temp dir
	HTTPSPort int    // the API server's port on 127.0.0.1
	EtcdPort  int    // the embedded etcd's client port; the peer port is the next one

	ReadyWall time.Duration // exec → ready line, as this process saw it
	ReadySelf string        // the "ready in X.Xs" the server reported itself

	dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process is reaped and its output logged
	log    *os.File      // the server's output, kept in dir for Tail
}

// Start execs bin as `skiff server --disable-agent` in a new temp dir under
// parentDir ("" for the system's) on free loopback ports, and returns once
// the server has printed its ready line. On error the server is already
// stopped and its dir removed; the error ends with the server's last output.
func Start(ctx context.Context, bin, parentDir string) (*Server, error) {
	dir, err := os.MkdirTemp(parentDir, "skiff-bench-server-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	s := &Server{dir: dir, DataDir: filepath.Join(dir, "data"), exited: make(chan struct{})}
	if err := s.start(ctx, bin); err != nil {
		tail := s.Tail()
		s.Close()
		return nil, fmt.Errorf("%w\nlast server output:\n%s", err, tail)
	}
	return s, nil
}

func (s *Server) start(ctx context.Context, bin string) error {
	base, err := freeRun(3) // https, etcd client, etcd peer (client+1)
	if err != nil {
		return err
	}
	s.HTTPSPort, s.EtcdPort = base, base+1
	if s.log, err = os.Create(s.logPath()); err != nil {
		return fmt.Errorf("create server log: %w", err)
	}
	pr, pw := io.Pipe()
	s.cmd = exec.Command(bin, "server", "--data-dir", s.DataDir,
		"--https-port", strconv.Itoa(s.HTTPSPort), "--etcd-port", strconv.Itoa(s.EtcdPort), "--disable-agent")
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	// The server must not outlive the benchmark, even if it is killed.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	begin := time.Now()
	if err := s.cmd.Start(); err != nil {
		close(s.exited)
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	ready := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		s.copyOutput(pr, ready)
		close(copied)
	}()
	go func() {
		s.cmd.Wait()
		pw.Close()
		// Tail right after an early exit must see the server's last words.
		<-copied
		close(s.exited)
	}()

	select {
	case self := <-ready:
		s.ReadyWall = time.Since(begin)
		s.ReadySelf = self
		return nil
	case <-s.exited:
		return fmt.Errorf("skiff server exited before ready: %v", s.cmd.ProcessState)
	case <-time.After(3 * time.Minute): // a server not up by then is stuck
		return errors.New("skiff server not ready after 3m")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// copyOutput keeps the server's output in the log file and reports the
// ready line the moment it is read. It reads to the end even past a line
// too long to scan, since a server blocked on writing its output would hang.
func (s *Server) copyOutput(r io.Reader, ready chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var once sync.Once
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(s.log, line)
		if m := readyLine.FindStringSubmatch(line); m != nil && strings.Contains(line, "kubeconfig") {
			once.Do(func() { ready <- m[1] })
		}
	}
	io.Copy(s.log, r)
}

// EtcdEndpoint is the embedded etcd member's client URL, as the server
// recorded it in its data dir.
func (s *Server) EtcdEndpoint() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.DataDir, "etcd-endpoint"))
	if err != nil {
		return "", fmt.Errorf("read the embedded etcd endpoint: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Memory returns the server's resident set now (VmRSS) and its peak so far
// (VmHWM), in bytes.
func (s *Server) Memory() (rss, peak uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read server memory: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s %q: %w", k, v, err)
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak, nil
}

// Kubeconfig is the path of the admin kubeconfig the server wrote.
func (s *Server) Kubeconfig() string { return filepath.Join(s.DataDir, "kubeconfig") }

// Tail is the end of what the server printed, for error messages.
func (s *Server) Tail() string { return TailFile(s.logPath()) }

func (s *Server) logPath() string { return filepath.Join(s.dir, "server.log") }

// Close stops the server (SIGTERM, then SIGKILL after 20 s) by its PID and
// removes its temp dir.
func (s *Server) Close() {
	Stop(s.cmd, s.exited)
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.dir)
}

// Stop ends one process a benchmark started, by its PID: SIGTERM, then
// SIGKILL if it has not exited 20 s later. exited must close once the
// process is reaped. bench/dns stops its DNS servers with it too, so that
// every process a benchmark starts gets the same grace.
func Stop(cmd *exec.Cmd, exited <-chan struct{}) {
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
	case <-time.After(killAfter):
		cmd.Process.Kill()
		<-exited
	}
}

// TailFile is the last 15 lines of a process's log file, or "(no output)"
// if there is none: enough to show why a process failed in an error message.
func TailFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no output)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}
