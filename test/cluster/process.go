package cluster

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/skiffnet/skiff/test/harness"
)

// process is a long-running program of the cluster (server or agent) whose
// output goes to a file kept with the cluster's directory.
type process struct {
	t      harness.T
	log    string
	pid    int
	exited chan struct{}
}

func start(t harness.T, ns namespace, cgroupDir, logPath string, name string, args ...string) *process {
	t.Helper()
	cmd, err := command(ns, cgroupDir, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	closeCgroupFD(cmd)
	p := &process{t: t, log: logPath, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.exited) }()
	t.Cleanup(func() { p.stop(syscall.SIGTERM) })
	return p
}

// stop signals the process group (nsenter and its child) and waits.
func (p *process) stop(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	syscall.Kill(-p.pid, sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-p.pid, syscall.SIGKILL)
		<-p.exited
	}
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (p *process) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func (p *process) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.output(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *process) waitFor(text string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for !strings.Contains(p.output(), text) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before %q:\n%s", p.log, text, p.tail(40))
		case <-deadline:
			return fmt.Errorf("no %q in %s after %s:\n%s", text, p.log, timeout, p.tail(40))
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
