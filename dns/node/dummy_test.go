package node_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/skiffnet/skiff/dns/node"
)

// inNewNetns runs fn on a thread moved into a new, empty network namespace,
// so the test changes no interface of the machine. Root is required.
// Goroutines fn starts run in the machine's namespace unless they enter
// the one fn is given.
func inNewNetns(t *testing.T, fn func(netns.NsHandle)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create a network namespace and a dummy interface")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	created, err := netns.New() // also switches this thread into it
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread stays in the test's namespace: let it die with
			// the goroutine rather than return it to the pool.
			t.Errorf("restore network namespace: %v", err)
			return
		}
		created.Close() // last reference: the kernel frees the namespace
		runtime.UnlockOSThread()
	}()
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	fn(created)
}

func TestDummy(t *testing.T) {
	inNewNetns(t, func(netns.NsHandle) {
		name := fmt.Sprintf("sk-dns-%d", os.Getpid()%100000)
		ips := []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::a")}
		d, err := node.AddDummy(name, ips...)
		if err != nil {
			t.Fatal(err)
		}
		link, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		// A bridge without ports where the kernel has no dummy driver.
		if typ := link.Type(); typ != "dummy" && typ != "bridge" || link.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s: type %s flags %v, want an up dummy", name, link.Type(), link.Attrs().Flags)
		}
		for _, ip := range ips {
			// Bind proves the kernel takes the address as local (an IPv6
			// one still doing DAD would fail here).
			pc, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), "53"))
			if err != nil {
				t.Errorf("bind %s: %v", ip, err)
				continue
			}
			pc.Close()
		}
		// A second AddDummy (the agent restarting after a crash) adopts it.
		again, err := node.AddDummy(name, ips[0])
		if err != nil {
			t.Fatalf("adopt a leftover interface: %v", err)
		}
		if err := again.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := netlink.LinkByName(name); err == nil {
			t.Error("interface still there after Close")
		}
		if err := d.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := node.AddDummy("lo", ips[0]); err == nil {
			t.Error("AddDummy took over lo")
		}
		// Nor a bridge that has ports: it is someone's network.
		la := netlink.NewLinkAttrs()
		la.Name = name + "b"
		br := &netlink.Bridge{LinkAttrs: la}
		if err := netlink.LinkAdd(br); err != nil {
			t.Fatal(err)
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name + "v", MasterIndex: 0}, PeerName: name + "p"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Fatal(err)
		}
		brLink, _ := netlink.LinkByName(name + "b")
		vLink, _ := netlink.LinkByName(name + "v")
		if err := netlink.LinkSetMaster(vLink, brLink); err != nil {
			t.Fatal(err)
		}
		if _, err := node.AddDummy(name+"b", ips[0]); err == nil {
			t.Error("AddDummy took over a bridge with ports")
		}
	})
}

// Run adds a ClusterIP that is not on the node to the dummy interface,
// answers on it, and deletes the interface when it stops.
func TestRunOnServiceIP(t *testing.T) {
	inNewNetns(t, func(testNS netns.NsHandle) {
		name := fmt.Sprintf("sk-dnsr-%d", os.Getpid()%10000)
		s, err := node.New(node.Options{
			Client:    fixtureClient(),
			Listen:    []string{"10.96.0.10:53", "169.254.20.10:53"},
			Interface: name,
			Upstreams: []string{"127.0.0.1:1"},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			// Run creates the interface and binds its sockets on its own
			// thread: move that thread into the test's namespace for good
			// (a goroutine that exits locked takes its thread with it).
			runtime.LockOSThread()
			if err := netns.Set(testNS); err != nil {
				done <- err
				return
			}
			done <- s.Run(ctx)
		}()
		select {
		case <-s.Ready():
		case err := <-done:
			t.Fatalf("Run: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("not ready after 5 s")
		}
		for _, addr := range []string{"10.96.0.10:53", "169.254.20.10:53"} {
			m := new(dns.Msg)
			m.SetQuestion("web.ns1.svc.cluster.local.", dns.TypeA)
			r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, addr)
			if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.96.1.10" {
				t.Errorf("query %s: %v, %v", addr, r, err)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, err := netlink.LinkByName(name); err == nil {
			t.Errorf("%s still there after Run returned", name)
		}
	})
}
