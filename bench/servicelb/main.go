// Command servicelb measures Skiff's eBPF service load balancer against a
// direct connection and against kube-proxy's iptables rules, in one run:
//
//	sudo go run ./bench/servicelb [-services 10000] [-endpoints 10] [-duration 3s]
//
// It runs in a network and mount namespace of its own (created at start,
// gone at exit, with its iptables rules and bpf filesystem), in a cgroup of
// its own that it removes, and sends traffic only to addresses of that
// namespace.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

const (
	namespacedEnv = "SKIFF_BENCH_NAMESPACED"
	clientEnv     = "SKIFF_BENCH_CLIENT"
	backendIP     = "10.255.255.1" // on loopback in the bench namespace
	ebpfVIP       = "10.96.0.1:80"
	iptablesVIP   = "10.97.0.1:80"
)

var (
	services  = flag.Int("services", 10000, "other Services loaded in both load balancers")
	endpoints = flag.Int("endpoints", 10, "endpoints per other Service")
	duration  = flag.Duration("duration", 3*time.Second, "connection test length per path")
	workers   = flag.Int("workers", 4, "concurrent connecting clients")
	changes   = flag.Int("changes", 1000, "EndpointSlice changes timed for programming latency")
)

func main() {
	flag.Parse()
	if os.Getenv(clientEnv) != "" {
		os.Exit(client())
	}
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "servicelb: run as root (it creates a network namespace, a cgroup and BPF programs)")
		os.Exit(1)
	}
	if os.Getenv(namespacedEnv) == "" {
		os.Exit(reexecNamespaced())
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "servicelb:", err)
		os.Exit(1)
	}
}

// reexecNamespaced runs this program again in fresh network and mount
// namespaces: everything it sets up disappears when it exits.
func reexecNamespaced() int {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), namespacedEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "servicelb:", err)
		return 1
	}
	return 0
}

func sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %w: %s", name, args, err, out)
	}
	return nil
}

// setupNetwork brings up loopback with the backends' address and a route
// for the Service ranges, as a node would have one (only iptables needs it:
// the eBPF path rewrites the address before routing).
func setupNetwork() error {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", backendIP + "/32", "dev", "lo"},
		{"route", "add", "10.0.0.0/8", "dev", "lo"},
	} {
		if err := sh("ip", args...); err != nil {
			return err
		}
	}
	// Many short connections: keep ephemeral ports from running out.
	return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("1024 65000"), 0o644)
}

func run() error {
	if err := setupNetwork(); err != nil {
		return err
	}
	backends, err := startBackends(3)
	if err != nil {
		return err
	}
	cg, err := makeCgroup()
	if err != nil {
		return err
	}
	defer removeCgroup(cg)

	fmt.Printf("servicelb: %d other Services x %d endpoints; %d workers, %v per path\n\n", *services, *endpoints, *workers, *duration)
	lb, err := loadEBPF(cg, backends)
	if err != nil {
		return err
	}
	defer lb.close()

	var r report
	if r.direct, err = measure(cg, fmt.Sprintf("%s:%d", backendIP, backends[0])); err != nil {
		return err
	}
	if r.ebpf, err = measure(cg, ebpfVIP); err != nil {
		return err
	}
	r.ebpfProg = lb.prog
	if r.iptablesSync, err = loadIPTables(backends); err != nil {
		return err
	}
	if r.iptables, err = measure(cg, iptablesVIP); err != nil {
		return err
	}
	r.print(os.Stdout)
	return nil
}

func makeCgroup() (string, error) {
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			continue
		}
		dir := filepath.Join(root, "skiff-bench-"+strconv.Itoa(os.Getpid()))
		return dir, os.Mkdir(dir, 0o755)
	}
	return "", errors.New("no cgroup2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup")
}

func removeCgroup(dir string) {
	os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644)
	for range 50 {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "servicelb: could not remove cgroup", dir)
}
