package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
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

// server is one `skiff server` process the benchmark started in a temp dir
// of its own. close stops it by PID and removes the dir, whatever happened.
type server struct {
	dir       string
	dataDir   string
	httpsPort int
	etcdPort  int

	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File // the server's output, kept in dir for a failure message

	readyWall time.Duration // exec → ready line, as this process saw it
	readySelf string        // the "ready in X.Xs" the server reported itself
}

var readyLine = regexp.MustCompile(`ready in ([0-9.]+s)`)

// startServer execs bin on free loopback ports and waits for its ready line.
// On error the returned server is already closed.
func startServer(ctx context.Context, bin string) (*server, error) {
	dir, err := os.MkdirTemp("", "skiff-bench-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	s := &server{dir: dir, dataDir: filepath.Join(dir, "data"), exited: make(chan struct{})}
	if err := s.start(ctx, bin); err != nil {
		tail := s.tail()
		s.close()
		return nil, fmt.Errorf("%w\nlast server output:\n%s", err, tail)
	}
	return s, nil
}

func (s *server) start(ctx context.Context, bin string) error {
	base, err := freePorts(3) // https, etcd client, etcd peer (client+1)
	if err != nil {
		return err
	}
	s.httpsPort, s.etcdPort = base, base+1
	if s.log, err = os.Create(filepath.Join(s.dir, "server.log")); err != nil {
		return fmt.Errorf("create server log: %w", err)
	}
	pr, pw := io.Pipe()
	s.cmd = exec.Command(bin, "server", "--data-dir", s.dataDir,
		"--https-port", strconv.Itoa(s.httpsPort), "--etcd-port", strconv.Itoa(s.etcdPort), "--disable-agent")
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	// The server must not outlive the benchmark, even if it is killed.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	begin := time.Now()
	if err := s.cmd.Start(); err != nil {
		close(s.exited)
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	go func() {
		s.cmd.Wait()
		pw.Close()
		close(s.exited)
	}()

	ready := make(chan string, 1)
	go s.copyOutput(pr, ready)
	select {
	case self := <-ready:
		s.readyWall = time.Since(begin)
		s.readySelf = self
		return nil
	case <-s.exited:
		return fmt.Errorf("skiff server exited before ready: %v", s.cmd.ProcessState)
	case <-time.After(3 * time.Minute):
		return errors.New("skiff server not ready after 3m")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// copyOutput keeps the server's output in the log file and reports the
// ready line the moment it is read.
func (s *server) copyOutput(r io.Reader, ready chan<- string) {
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
}

func (s *server) kubeconfig() string { return filepath.Join(s.dataDir, "kubeconfig") }

// etcdEndpoint is the embedded member's client URL, as the server recorded it.
func (s *server) etcdEndpoint() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "etcd-endpoint"))
	if err != nil {
		return "", fmt.Errorf("read the embedded etcd endpoint: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// memory returns the process's resident set now and its peak, in bytes.
func (s *server) memory() (rss, peak uint64, err error) {
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

// tail is the end of what the server printed, for error messages.
func (s *server) tail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "server.log"))
	if err != nil {
		return "(no output)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// close stops the server (SIGTERM, then SIGKILL after 20 s) by its PID and
// removes its temp dir.
func (s *server) close() {
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(20 * time.Second):
				s.cmd.Process.Kill()
				<-s.exited
			}
		}
	}
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.dir)
}

// freePorts returns a base port p such that p..p+n-1 are free on loopback.
func freePorts(n int) (int, error) {
	for range 200 {
		base := 20000 + rand.IntN(20000)
		ok := true
		for i := range n {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, errors.New("no free loopback ports")
}
