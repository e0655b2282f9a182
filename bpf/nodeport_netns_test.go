package bpf_test

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/bpf/bpftest"
)

// TestNodePortThroughNamespaces sends real traffic from a client namespace
// to node 1 of a bpftest.LAN, whose eth0 carries the tc programs, with one
// backend in a pod behind node 1 and one behind node 2.
func TestNodePortThroughNamespaces(t *testing.T) {
	l := bpftest.NewLAN(t)
	pins := filepath.Join(bpftest.BPFFS(t), "n1")
	objs, err := bpf.Load(pins)
	if err != nil {
		t.Fatal(err)
	}
	np, err := objs.LoadNodePort()
	if err != nil {
		objs.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		np.Close()
		objs.Close()
		if err := bpf.Remove(pins); err != nil {
			t.Errorf("remove pins: %v", err)
		}
	})
	err = bpftest.Do(l.Node1, func() error {
		return np.Attach([]bpf.Interface{{Name: "eth0", SNAT: bpftest.LANNode1}})
	})
	if err != nil {
		t.Fatal(err)
	}
	node := &tcNode{objs: objs, np: np, nextID: 1}

	bpftest.Serve(t, l.Pod1, "pod1")
	bpftest.Serve(t, l.Pod2, "pod2")
	be1, be2 := netip.AddrPortFrom(bpftest.LANPod1, 8080), netip.AddrPortFrom(bpftest.LANPod2, 8080)

	t.Run("ClusterPolicy", func(t *testing.T) {
		fe := netip.AddrPortFrom(bpftest.LANNode1, 30080)
		node.frontend(t, fe, unix.IPPROTO_TCP, 0, be1, be2)
		count := map[string]int{}
		for range 40 {
			a := bpftest.DialTCP(t, l.Client, fe)
			if a.Err != nil {
				t.Fatalf("connect to NodePort %s: %v", fe, a.Err)
			}
			if a.From != fe.String() {
				t.Errorf("answer came from %s, want the NodePort %s", a.From, fe)
			}
			// A local backend sees the client; a remote one sees node 1,
			// which its replies must pass through to be translated back.
			want := map[string]netip.Addr{"pod1": bpftest.LANClient, "pod2": bpftest.LANNode1}[a.Backend]
			if a.SawHost() != want.String() {
				t.Errorf("%s saw the client as %s, want %s", a.Backend, a.SawClient, want)
			}
			count[a.Backend]++
		}
		if count["pod1"] < 5 || count["pod2"] < 5 {
			t.Errorf("40 connections spread as %v, want both backends", count)
		}
	})

	t.Run("LocalPolicyKeepsClientAddress", func(t *testing.T) {
		// externalTrafficPolicy Local: the external frontend holds only the
		// node's own endpoints.
		fe := netip.AddrPortFrom(bpftest.LANNode1, 30081)
		node.frontend(t, fe, unix.IPPROTO_TCP, 0, be1)
		for range 5 {
			a := bpftest.DialTCP(t, l.Client, fe)
			if a.Err != nil || a.Backend != "pod1" || a.SawHost() != bpftest.LANClient.String() || a.From != fe.String() {
				t.Fatalf("connect to %s: %+v; want pod1 seeing the client's own address %s", fe, a, bpftest.LANClient)
			}
		}
	})

	t.Run("ExternalIP", func(t *testing.T) {
		fe := netip.AddrPortFrom(bpftest.LANExternal, 80)
		node.frontend(t, fe, unix.IPPROTO_TCP, 0, be1, be2)
		seen := map[string]bool{}
		for range 20 {
			a := bpftest.DialTCP(t, l.Client, fe)
			if a.Err != nil || a.From != fe.String() {
				t.Fatalf("connect to %s: %+v", fe, a)
			}
			seen[a.Backend] = true
		}
		if !seen["pod1"] || !seen["pod2"] {
			t.Errorf("20 connections answered by %v, want both backends", seen)
		}
	})

	t.Run("UDP", func(t *testing.T) {
		fe := netip.AddrPortFrom(bpftest.LANNode1, 30053)
		node.frontend(t, fe, unix.IPPROTO_UDP, 0, netip.AddrPortFrom(bpftest.LANPod1, 5353), netip.AddrPortFrom(bpftest.LANPod2, 5353))
		seen := map[string]bool{}
		for range 30 {
			a := bpftest.QueryUDP(t, l.Client, fe)
			if a.Err != nil || a.From != fe.String() {
				t.Fatalf("query to %s: %+v; want an answer from %s", fe, a, fe)
			}
			seen[a.Backend] = true
		}
		if !seen["pod1"] || !seen["pod2"] {
			t.Errorf("30 queries answered by %v, want both backends", seen)
		}
	})

	t.Run("NoEndpointsRefused", func(t *testing.T) {
		// Not a node address: without the programs' RST the node would
		// answer "no route", not ECONNREFUSED.
		fe := netip.AddrPortFrom(bpftest.LANExternal, 81)
		node.frontend(t, fe, unix.IPPROTO_TCP, 0)
		a := bpftest.DialTCP(t, l.Client, fe)
		if !errors.Is(a.Err, syscall.ECONNREFUSED) || a.Took > time.Second {
			t.Fatalf("connect to a frontend without endpoints: %v after %s, want ECONNREFUSED at once", a.Err, a.Took)
		}
	})

	s, err := np.ReadStats()
	if err != nil {
		t.Fatal(err)
	}
	if s[bpf.NPDNATLocal] == 0 || s[bpf.NPDNATSNAT] == 0 || s[bpf.NPRevNat] == 0 || s[bpf.NPReject] != 1 {
		t.Errorf("stats %v", s)
	}
	var k bpf.CTKey
	var v bpf.CTVal
	var flows []string
	for it := np.CT.Iterate(); it.Next(&k, &v); {
		flows = append(flows, k.String())
	}
	if len(flows) == 0 {
		t.Errorf("no conntrack entries after the traffic")
	}
	t.Logf("%d conntrack entries, e.g.\n%s", len(flows), strings.Join(flows[:min(4, len(flows))], "\n"))
}
