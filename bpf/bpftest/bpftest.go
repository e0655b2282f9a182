// Package bpftest runs clients inside a test cgroup, where the node's
// socket programs act on them, and provides backends and a private bpf
// filesystem for tests of the service load balancer.
package bpftest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffnet/skiff/bpf"
)

// The socket programs act on processes in a cgroup, so tests re-execute the
// test binary as a client inside a test cgroup: TestMain runs the client
// when helperEnv is set. It prints one line per attempt:
//
//	ok <backend reply> <peer address>
//	err <errno name> <milliseconds>
const helperEnv = "SKIFF_BPF_TEST_CLIENT"

// Main runs the tests, or the client when the binary was started as one.
// A test package using Run calls it from its TestMain.
func Main(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runClient(mode, os.Args[len(os.Args)-2], os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

func runClient(mode, target, count string) int {
	n, _ := strconv.Atoi(count)
	switch mode {
	case "tcp":
		for range n {
			fmt.Println(Dial(target))
		}
	case "tcp6":
		for range n {
			fmt.Println(Dial6(target))
		}
	case "udp6":
		udp6(target, n)
	case "udp":
		// One unconnected socket for all datagrams, as a DNS stub does.
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fmt.Println("err listen", err)
			return 1
		}
		dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(target))
		buf := make([]byte, 64)
		for range n {
			if _, err := c.WriteToUDP([]byte("ping"), dst); err != nil {
				fmt.Println("err", errnoName(err), 0)
				continue
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			k, from, err := c.ReadFromUDP(buf)
			if err != nil {
				fmt.Println("err", errnoName(err), 0)
				continue
			}
			fmt.Println("ok", string(buf[:k]), from)
		}
	}
	return 0
}

// Dial connects to target and returns the client line for it.
func Dial(target string) string {
	start := time.Now()
	c, err := net.DialTimeout("tcp4", target, 2*time.Second)
	if err != nil {
		return fmt.Sprintf("err %s %d", errnoName(err), time.Since(start).Milliseconds())
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Sprintf("err read:%v 0", err)
	}
	return fmt.Sprintf("ok %s %s", strings.TrimSpace(line), c.RemoteAddr())
}

func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return "timeout"
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

// Result is one client attempt.
type Result struct {
	OK      bool
	Reply   string // backend name, or errno name
	Peer    string
	Elapsed time.Duration // of a failed attempt
}

// Run runs the test binary as a client inside cgroup dir, making n
// attempts: mode "tcp" connects n times, "udp" sends n datagrams from one
// unconnected socket; "tcp6" and "udp6" do the same from IPv6 sockets to
// the v4-mapped form of target.
func Run(t *testing.T, dir, mode, target string, n int) []Result {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	defer unix.Close(fd)
	cmd := exec.Command(os.Args[0], "-test.run=^$", target, strconv.Itoa(n))
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client %s %s: %v\n%s", mode, target, err, out)
	}
	var rs []Result
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("client printed %q", line)
		}
		r := Result{OK: f[0] == "ok", Reply: f[1], Peer: f[2]}
		if !r.OK {
			ms, _ := strconv.Atoi(f[2])
			r.Elapsed = time.Duration(ms) * time.Millisecond
		}
		rs = append(rs, r)
	}
	if len(rs) != n {
		t.Fatalf("client made %d attempts, want %d:\n%s", len(rs), n, out)
	}
	return rs
}

// Cgroup creates a cgroup2 directory for the test and removes it, with
// every process still inside, at the end. It fails the test unless root.
func Cgroup(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test attaches BPF programs to a cgroup and must run as root")
	}
	root := "/sys/fs/cgroup/unified"
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		root = "/sys/fs/cgroup"
		if err := unix.Statfs(root, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
			t.Fatal("no cgroup2 filesystem at /sys/fs/cgroup/unified or /sys/fs/cgroup")
		}
	}
	dir := filepath.Join(root, "skiff-test-"+randomSuffix())
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644)
		for i := 0; ; i++ {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if i == 50 {
				t.Errorf("remove cgroup %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}

// BPFFS mounts a private bpf filesystem for the test's pins.
func BPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := bpf.MountBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TCPBackend answers each connection with its name and a newline.
func TCPBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(name + "\n"))
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// UDPBackend answers each datagram with its name.
func UDPBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort([]byte(name), from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}
