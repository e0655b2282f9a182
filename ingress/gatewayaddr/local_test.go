package gatewayaddr

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// TestLocalRoutes runs in a network namespace of its own: a listener on the
// wildcard address accepts connections to a Gateway address once Sync made
// it local, and no longer once the Gateway is gone.
func TestLocalRoutes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test creates a network namespace: run it as root")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		testutils.UnmountNS(n)
	})
	err = n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", ":18080")
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		connects := func(a string) bool {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(a, "18080"), time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		}
		l, err := NewLocal()
		if err != nil {
			return err
		}
		a, b := netip.MustParseAddr("10.250.0.1"), netip.MustParseAddr("fd00:250::1")
		if connects(a.String()) {
			t.Errorf("%s answers before it was made local", a)
		}
		if err := l.Sync([]netip.Addr{b, a, a}); err != nil {
			return err
		}
		if !connects(a.String()) || !connects(b.String()) {
			t.Errorf("after Sync, connections to %s and %s should be accepted", a, b)
		}
		// A new Local (a restarted agent) finds the routes and removes
		// what is no longer wanted.
		l2, err := NewLocal()
		if err != nil {
			return err
		}
		if err := l2.Sync([]netip.Addr{b}); err != nil {
			return err
		}
		if connects(a.String()) {
			t.Errorf("%s still answers after its Gateway went away", a)
		}
		if got, _ := list(); !slices.Equal(got, []netip.Addr{b}) {
			t.Errorf("kernel holds %v, want [%s]", got, b)
		}
		if err := Flush(); err != nil {
			return err
		}
		if got, _ := list(); len(got) != 0 {
			t.Errorf("after Flush the kernel still holds %v", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
