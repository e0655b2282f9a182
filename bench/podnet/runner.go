package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// runner gives the cluster harness what a test would (it is a harness.T):
// Fatal ends the run through a panic that do recovers, and cleanups run in
// reverse order when cleanup is called, once each.
type runner struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

type fatalErr struct{}

func (r *runner) Helper()                           {}
func (r *runner) Logf(format string, args ...any)   { logf(format, args...) }
func (r *runner) Skip(args ...any)                  { r.Fatal(args...) }
func (r *runner) Fatal(args ...any)                 { r.fail(fmt.Sprint(args...)) }
func (r *runner) Fatalf(format string, args ...any) { r.fail(fmt.Sprintf(format, args...)) }

func (r *runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *runner) fail(msg string) {
	fmt.Fprintln(os.Stderr, "podnet:", msg)
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
	panic(fatalErr{})
}

// do runs f, turning a Fatal into false.
func (r *runner) do(f func()) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if _, isFatal := v.(fatalErr); !isFatal {
				buf := make([]byte, 64<<10)
				fmt.Fprintf(os.Stderr, "panic: %v\n%s", v, buf[:runtime.Stack(buf, false)])
				r.mu.Lock()
				r.failed = true
				r.mu.Unlock()
			}
			ok = false
		}
	}()
	f()
	return true
}

// cleanup runs and forgets every cleanup registered so far.
func (r *runner) cleanup() {
	for {
		r.mu.Lock()
		if len(r.cleanups) == 0 {
			r.mu.Unlock()
			return
		}
		f := r.cleanups[len(r.cleanups)-1]
		r.cleanups = r.cleanups[:len(r.cleanups)-1]
		r.mu.Unlock()
		f()
	}
}

// inNetns is a command run in the network namespace at path (only the
// network: files and cgroups stay the bench's own).
func inNetns(path, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--net=" + path, "--", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return cmd
}

// background starts a server in a namespace until cleanup, which kills it
// by its process group (nsenter execs it, so that is the server itself).
func (r *runner) background(ns string, argv ...string) {
	cmd := inNetns(ns, argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		r.Fatalf("start %s in %s: %v", argv, ns, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	r.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
}

func lookPath(name string) (string, error) { return exec.LookPath(name) }
