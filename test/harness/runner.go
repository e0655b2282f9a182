package harness

import (
	"fmt"
	"os"
	"runtime"
)

// Runner is a T for programs that use the test harness outside `go test`
// (testcluster, the conformance runner): Fatal ends the work passed to Do,
// and Cleanup functions run in reverse order in RunCleanups.
type Runner struct {
	cleanups []func()
	failed   bool
}

type fatal struct{}

func (r *Runner) Helper()                         {}
func (r *Runner) Logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }
func (r *Runner) Cleanup(f func())                { r.cleanups = append(r.cleanups, f) }
func (r *Runner) Failed() bool                    { return r.failed }
func (r *Runner) Skip(args ...any)                { r.Fatal(args...) }
func (r *Runner) Fatal(args ...any)               { r.fail(fmt.Sprint(args...)) }
func (r *Runner) Fatalf(format string, args ...any) {
	r.fail(fmt.Sprintf(format, args...))
}

func (r *Runner) fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	r.failed = true
	panic(fatal{})
}

// Do runs f, turning a Fatal into false.
func (r *Runner) Do(f func()) (ok bool) {
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

// RunCleanups runs the registered cleanups, newest first.
func (r *Runner) RunCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}
