package main

import (
	"fmt"
	"os"
	"runtime"
)

// runner gives the cluster harness what a test would: Fatal ends the
// start-up (running every cleanup registered so far) and Cleanup functions
// run in reverse order when the cluster stops.
type runner struct {
	cleanups []func()
	failed   bool
}

type fatal struct{}

func (r *runner) Helper()                         {}
func (r *runner) Logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }
func (r *runner) Cleanup(f func())                { r.cleanups = append(r.cleanups, f) }
func (r *runner) Failed() bool                    { return r.failed }
func (r *runner) Skip(args ...any)                { r.Fatal(args...) }
func (r *runner) Fatal(args ...any)               { r.fail(fmt.Sprint(args...)) }
func (r *runner) Fatalf(format string, args ...any) {
	r.fail(fmt.Sprintf(format, args...))
}

func (r *runner) fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	r.failed = true
	panic(fatal{})
}

// do runs f, turning a Fatal into false.
func (r *runner) do(f func()) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if _, isFatal := v.(fatal); !isFatal {
				buf := make([]byte, 64<<10)
				fmt.Fprintf(os.Stderr, "panic: %v\n%s", v, buf[:runtime.Stack(buf, false)])
				r.failed = true
			}
			ok = false
		}
	}()
	f()
	return true
}

func (r *runner) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}
