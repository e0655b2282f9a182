// Package harness starts the built `skiff` binary for end-to-end tests and
// runs kubectl against it, cleaning up after each test.
package harness

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Binary is the skiff binary under test: $SKIFF_BINARY, as `make test` sets it.
func Binary(t T) string {
	t.Helper()
	bin := os.Getenv("SKIFF_BINARY")
	if bin == "" {
		t.Fatal("SKIFF_BINARY is not set: run `make test` (it builds _output/skiff), or set SKIFF_BINARY=/path/to/skiff")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("SKIFF_BINARY: %v (build it with `make build`)", err)
	}
	return bin
}

// RequireRoot fails (under CI) or skips (elsewhere) a test that needs root.
func RequireRoot(t T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root, and CI must run as root")
	}
	t.Skip("needs root")
}

// FreePorts returns a base port p such that p..p+n-1 are free on loopback
// right now. Ports are chosen at random so parallel test binaries rarely meet.
func FreePorts(t T, n int) int {
	t.Helper()
	for range 200 {
		base := 20000 + rand.IntN(20000)
		ok := true
		for i := range n {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free loopback ports")
	return 0
}

// Output collects a process's output safely across goroutines.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// Run runs a command and returns its combined output.
func Run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// TempDir is a fresh directory removed after the test, kept on failure for
// a person to read the logs (its path is logged).
func TempDir(t T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "skiff-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept %s for inspection", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return filepath.Clean(dir)
}

// T is the part of testing.TB the harness uses, so the test cluster can also
// run outside `go test` (see test/cluster/testcluster).
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	Failed() bool
}
