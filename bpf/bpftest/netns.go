package bpftest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Netns creates a named network namespace (/run/netns/<prefix>-<random>)
// with loopback up, deleted when the test ends. It fails unless root.
func Netns(t testing.TB, prefix string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates network namespaces and must run as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("this test needs iproute2's ip command: apt-get install iproute2")
	}
	name := prefix + "-" + randomSuffix()
	IP(t, "", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	IP(t, name, "link", "set", "lo", "up")
	return name
}

// IP runs an iproute2 command, inside namespace ns unless ns is empty.
func IP(t testing.TB, ns string, args ...string) {
	t.Helper()
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Sysctl writes a sysctl inside namespace ns, e.g. "net.ipv4.ip_forward=1".
func Sysctl(t testing.TB, ns, kv string) {
	t.Helper()
	k, v, _ := strings.Cut(kv, "=")
	err := Do(ns, func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(k, ".", "/"), []byte(v), 0o644)
	})
	if err != nil {
		t.Fatalf("sysctl %s in %s: %v", kv, ns, err)
	}
}

// Do runs fn on an OS thread inside namespace ns. Sockets fn opens stay in
// ns; so do BPF links it attaches by interface index. The thread goes back
// to its own namespace afterwards, or, if that fails, is discarded.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current netns: %w", err)
			return // the locked thread exits with the goroutine
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
