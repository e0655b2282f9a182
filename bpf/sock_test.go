package bpf_test

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/bpf/bpftest"
)

func TestMain(m *testing.M) { bpftest.Main(m) }

// lbNode is one loaded and attached load balancer with its test cgroup.
type lbNode struct {
	objs   *bpf.Objects
	cgroup string
	pins   string
	nextID uint32
}

func newNode(t *testing.T) *lbNode {
	t.Helper()
	cg := bpftest.Cgroup(t)
	pins := filepath.Join(bpftest.BPFFS(t), "node")
	objs, err := bpf.Load(pins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		objs.Close()
		if err := bpf.Remove(pins); err != nil {
			t.Errorf("remove pins: %v", err)
		}
	})
	if err := objs.Attach(cg); err != nil {
		t.Fatal(err)
	}
	return &lbNode{objs: objs, cgroup: cg, pins: pins, nextID: 1}
}

// set writes a frontend with backends straight into the maps, as
// proxy/lbmap would.
func (n *lbNode) set(t *testing.T, vip netip.AddrPort, proto uint8, flags uint16, timeout uint32, backends ...netip.AddrPort) uint32 {
	t.Helper()
	id := n.nextID
	n.nextID++
	for i, b := range backends {
		bid := id*100 + uint32(i) + 1
		if err := n.objs.Backends.Put(bid, bpf.Backend{Addr: bpf.Addr4(b.Addr()), Port: bpf.Port(b.Port()), Proto: proto}); err != nil {
			t.Fatal(err)
		}
		if err := n.objs.Slots.Put(bpf.SlotKey{Id: id, Slot: uint32(i + 1)}, bid); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.objs.RevNat.Put(id, bpf.Frontend{Addr: bpf.Addr4(vip.Addr()), Port: bpf.Port(vip.Port())}); err != nil {
		t.Fatal(err)
	}
	key := bpf.ServiceKey{Addr: bpf.Addr4(vip.Addr()), Port: bpf.Port(vip.Port()), Proto: proto, Scope: bpf.ScopeInternal}
	val := bpf.Service{Id: id, Count: uint16(len(backends)), Flags: flags, AffinityTimeout: timeout}
	if err := n.objs.Services.Put(key, val); err != nil {
		t.Fatal(err)
	}
	return id
}

// VIPs are in 127/8: a connect the programs fail to translate stays on
// loopback and is refused, instead of leaving the machine.
var (
	vipTCP = netip.MustParseAddrPort("127.77.0.1:80")
	vipUDP = netip.MustParseAddrPort("127.77.0.2:53")
)

func TestConnectSpreadsOverBackends(t *testing.T) {
	n := newNode(t)
	n.set(t, vipTCP, unix.IPPROTO_TCP, 0, 0, bpftest.TCPBackend(t, "a"), bpftest.TCPBackend(t, "b"), bpftest.TCPBackend(t, "c"))

	counts := map[string]int{}
	for _, r := range bpftest.Run(t, n.cgroup, "tcp", vipTCP.String(), 90) {
		if !r.OK {
			t.Fatalf("connect to %s failed: %s", vipTCP, r.Reply)
		}
		if r.Peer != vipTCP.String() {
			t.Errorf("getpeername = %s, want the bpf.Service address %s", r.Peer, vipTCP)
		}
		counts[r.Reply]++
	}
	for _, b := range []string{"a", "b", "c"} {
		// 90 connects over 3 backends: each gets 30 on average; fewer than
		// 10 has a probability below 1e-6.
		if counts[b] < 10 {
			t.Errorf("backend %s got %d of 90 connections (all: %v)", b, counts[b], counts)
		}
	}
	stats, err := n.objs.ReadStats()
	if err != nil {
		t.Fatal(err)
	}
	if stats[bpf.StatXlateConnect] != 90 {
		t.Errorf("connect translations = %d, want 90", stats[bpf.StatXlateConnect])
	}
}

func TestConnectOnlyInsideCgroup(t *testing.T) {
	n := newNode(t)
	n.set(t, vipTCP, unix.IPPROTO_TCP, 0, 0, bpftest.TCPBackend(t, "a"))
	// This test process is outside the cgroup: nothing listens on the VIP
	// itself, so an untranslated connect is refused.
	if got := bpftest.Dial(vipTCP.String()); !strings.HasPrefix(got, "err ECONNREFUSED") {
		t.Fatalf("connect from outside the node's cgroup = %q, want it untranslated and refused", got)
	}
	if r := bpftest.Run(t, n.cgroup, "tcp", vipTCP.String(), 1)[0]; !r.OK || r.Reply != "a" {
		t.Fatalf("connect from inside the cgroup = %+v, want backend a", r)
	}
}

func TestNoBackendsRefusesAtOnce(t *testing.T) {
	n := newNode(t)
	n.set(t, vipTCP, unix.IPPROTO_TCP, 0, 0)
	n.set(t, netip.MustParseAddrPort("127.77.0.3:80"), unix.IPPROTO_TCP, bpf.FlagNoLocal, 0)

	for _, tc := range []struct {
		vip, errno string
	}{
		{vipTCP.String(), "ECONNREFUSED"},
		{"127.77.0.3:80", "EHOSTUNREACH"},
	} {
		for _, r := range bpftest.Run(t, n.cgroup, "tcp", tc.vip, 3) {
			if r.OK || r.Reply != tc.errno {
				t.Errorf("connect to %s: %+v, want %s", tc.vip, r, tc.errno)
			}
			if r.Elapsed > 100*time.Millisecond {
				t.Errorf("connect to %s failed after %v, want at once", tc.vip, r.Elapsed)
			}
		}
	}
	stats, err := n.objs.ReadStats()
	if err != nil {
		t.Fatal(err)
	}
	if stats[bpf.StatRejectNoEndpoints] != 3 || stats[bpf.StatRejectNoLocal] != 3 {
		t.Errorf("reject counters = %d no endpoints, %d no local, want 3 and 3", stats[bpf.StatRejectNoEndpoints], stats[bpf.StatRejectNoLocal])
	}
}

func TestSessionAffinityPinsClient(t *testing.T) {
	n := newNode(t)
	n.set(t, vipTCP, unix.IPPROTO_TCP, bpf.FlagAffinity, 3600, bpftest.TCPBackend(t, "a"), bpftest.TCPBackend(t, "b"), bpftest.TCPBackend(t, "c"))

	// Two client processes in the same network namespace are one client.
	seen := map[string]bool{}
	for range 2 {
		for _, r := range bpftest.Run(t, n.cgroup, "tcp", vipTCP.String(), 20) {
			if !r.OK {
				t.Fatalf("connect failed: %s", r.Reply)
			}
			seen[r.Reply] = true
		}
	}
	if len(seen) != 1 {
		t.Fatalf("affinity client reached backends %v, want exactly one", seen)
	}
}

func TestUDPThroughVIP(t *testing.T) {
	n := newNode(t)
	n.set(t, vipUDP, unix.IPPROTO_UDP, 0, 0, bpftest.UDPBackend(t, "a"), bpftest.UDPBackend(t, "b"), bpftest.UDPBackend(t, "c"))

	seen := map[string]bool{}
	for range 12 {
		perSocket := map[string]bool{}
		for _, r := range bpftest.Run(t, n.cgroup, "udp", vipUDP.String(), 5) {
			if !r.OK {
				t.Fatalf("datagram to %s: %s", vipUDP, r.Reply)
			}
			if r.Peer != vipUDP.String() {
				t.Errorf("reply came from %s, want the bpf.Service address %s", r.Peer, vipUDP)
			}
			perSocket[r.Reply] = true
			seen[r.Reply] = true
		}
		if len(perSocket) != 1 {
			t.Errorf("one socket's datagrams went to %v, want one backend", perSocket)
		}
	}
	// 12 sockets over 3 backends all missing one: probability 3*(2/3)^12 < 3%.
	// Two backends seen is enough to show sockets are spread.
	if len(seen) < 2 {
		t.Errorf("12 sockets all went to %v", seen)
	}
}

// An agent restart loads the programs again over the same pins: the maps
// keep their contents and the pinned links get the new programs.
func TestReloadKeepsMapsAndLinks(t *testing.T) {
	n := newNode(t)
	n.set(t, vipTCP, unix.IPPROTO_TCP, 0, 0, bpftest.TCPBackend(t, "a"))
	n.objs.Close()

	objs, err := bpf.Load(n.pins)
	if err != nil {
		t.Fatal(err)
	}
	n.objs = objs
	t.Cleanup(func() { objs.Close() })
	if err := objs.Attach(n.cgroup); err != nil {
		t.Fatal(err)
	}
	var svc bpf.Service
	if err := objs.Services.Lookup(bpf.ServiceKey{Addr: bpf.Addr4(vipTCP.Addr()), Port: bpf.Port(vipTCP.Port()), Proto: unix.IPPROTO_TCP, Scope: bpf.ScopeInternal}, &svc); err != nil {
		t.Fatalf("service entry lost across reload: %v", err)
	}
	if r := bpftest.Run(t, n.cgroup, "tcp", vipTCP.String(), 1)[0]; !r.OK || r.Reply != "a" {
		t.Fatalf("connect after reload = %+v, want backend a", r)
	}
	stats, err := objs.ReadStats()
	if err != nil {
		t.Fatal(err)
	}
	if stats[bpf.StatXlateConnect] != 1 {
		t.Errorf("connect translations after reload = %d, want 1", stats[bpf.StatXlateConnect])
	}
}

// TestIPv6SocketsReachIPv4Services: dual-stack programs (Java's default)
// dial ::ffff:a.b.c.d from IPv6 sockets, which runs the connect6, sendmsg6,
// recvmsg6 and getpeername6 hooks.
func TestIPv6SocketsReachIPv4Services(t *testing.T) {
	n := newNode(t)
	n.set(t, vipTCP, unix.IPPROTO_TCP, 0, 0, bpftest.TCPBackend(t, "a"), bpftest.TCPBackend(t, "b"))
	n.set(t, vipUDP, unix.IPPROTO_UDP, 0, 0, bpftest.UDPBackend(t, "u"))
	mapped := func(ap netip.AddrPort) string {
		return netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port()).String()
	}
	seen := map[string]bool{}
	for _, r := range bpftest.Run(t, n.cgroup, "tcp6", vipTCP.String(), 20) {
		if !r.OK {
			t.Fatalf("connect from an IPv6 socket to %s failed: %s", mapped(vipTCP), r.Reply)
		}
		if r.Peer != mapped(vipTCP) {
			t.Errorf("getpeername = %s, want %s", r.Peer, mapped(vipTCP))
		}
		seen[r.Reply] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("20 connects reached %v, want both backends", seen)
	}
	for _, r := range bpftest.Run(t, n.cgroup, "udp6", vipUDP.String(), 3) {
		if !r.OK || r.Reply != "u" {
			t.Fatalf("datagram from an IPv6 socket to %s: %+v", mapped(vipUDP), r)
		}
		if r.Peer != mapped(vipUDP) {
			t.Errorf("reply came from %s, want %s", r.Peer, mapped(vipUDP))
		}
	}
}
