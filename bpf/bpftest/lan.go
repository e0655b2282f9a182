package bpftest

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// LAN is a small cluster in namespaces of the test's own, shaped like the
// test cluster: a client namespace holding the bridge the nodes' eth0 sit
// on, two node namespaces routing each other's pod ranges, and one pod
// namespace per node behind a host veth. Nothing is attached to it: tests
// put the load balancer's programs on Node1's eth0; Node2 is a plain router
// for its pod.
//
//	Client  br0  172.31.0.1/24, 172.31.0.50 (LANExternal) routed to node 1
//	Node1   eth0 172.31.0.11/24, vpod 10.200.1.1/24, 10.200.2.0/24 via .12
//	Node2   eth0 172.31.0.12/24, vpod 10.200.2.1/24, 10.200.1.0/24 via .11
//	Pod1    eth0 10.200.1.2/24 (local to node 1)
//	Pod2    eth0 10.200.2.2/24 (remote)
type LAN struct {
	Client, Node1, Node2, Pod1, Pod2 string // namespace names
}

var (
	LANClient   = netip.MustParseAddr("172.31.0.1")
	LANNode1    = netip.MustParseAddr("172.31.0.11")
	LANNode2    = netip.MustParseAddr("172.31.0.12")
	LANExternal = netip.MustParseAddr("172.31.0.50") // an externalIP / LoadBalancer IP for node 1
	LANPod1     = netip.MustParseAddr("10.200.1.2")
	LANPod2     = netip.MustParseAddr("10.200.2.2")
)

// NewLAN builds the namespaces, removed when the test ends.
func NewLAN(t *testing.T) *LAN {
	t.Helper()
	l := &LAN{
		Client: Netns(t, "skiff-lan"),
		Node1:  Netns(t, "skiff-n1"), Node2: Netns(t, "skiff-n2"),
		Pod1: Netns(t, "skiff-p1"), Pod2: Netns(t, "skiff-p2"),
	}
	ip := func(ns string, args ...string) { t.Helper(); IP(t, ns, args...) }
	ip(l.Client, "link", "add", "br0", "type", "bridge")
	ip(l.Client, "addr", "add", "172.31.0.1/24", "dev", "br0")
	ip(l.Client, "link", "set", "br0", "up")
	ip(l.Client, "route", "add", "172.31.0.50/32", "via", "172.31.0.11")
	for i, n := range []struct{ node, pod string }{{l.Node1, l.Pod1}, {l.Node2, l.Pod2}} {
		me, other := i+1, 2-i
		port := fmt.Sprintf("n%d", me)
		Sysctl(t, n.node, "net.ipv4.ip_forward=1")
		ip(l.Client, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.node)
		ip(l.Client, "link", "set", port, "master", "br0", "up")
		ip(n.node, "addr", "add", fmt.Sprintf("172.31.0.%d/24", 10+me), "dev", "eth0")
		ip(n.node, "link", "set", "eth0", "up")
		ip(n.node, "route", "add", fmt.Sprintf("10.200.%d.0/24", other), "via", fmt.Sprintf("172.31.0.%d", 10+other))
		ip(n.node, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", n.pod)
		ip(n.node, "addr", "add", fmt.Sprintf("10.200.%d.1/24", me), "dev", "vpod")
		ip(n.node, "link", "set", "vpod", "up")
		ip(n.pod, "addr", "add", fmt.Sprintf("10.200.%d.2/24", me), "dev", "eth0")
		ip(n.pod, "link", "set", "eth0", "up")
		ip(n.pod, "route", "add", "default", "via", fmt.Sprintf("10.200.%d.1", me))
	}
	return l
}

// Serve runs backends in namespace ns on port 8080 (TCP) and 5353 (UDP)
// that answer "<name> <client address they see>".
func Serve(t *testing.T, ns, name string) {
	t.Helper()
	var tl net.Listener
	var uc net.PacketConn
	err := Do(ns, func() error {
		var err error
		if tl, err = net.Listen("tcp4", ":8080"); err != nil {
			return err
		}
		uc, err = net.ListenPacket("udp4", ":5353")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close(); uc.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo([]byte(name+" "+from.String()), from)
		}
	}()
}

// Answer is what a client got from a Serve backend.
type Answer struct {
	Backend, SawClient string // as the backend reports them
	From               string // the address the answer came from
	Err                error
	Took               time.Duration
}

// SawHost is the address part of SawClient.
func (a Answer) SawHost() string {
	h, _, _ := net.SplitHostPort(a.SawClient)
	return h
}

// DialTCP connects from namespace ns and reads the backend's line.
func DialTCP(t *testing.T, ns string, target netip.AddrPort) Answer {
	t.Helper()
	var a Answer
	err := Do(ns, func() error {
		start := time.Now()
		c, err := net.DialTimeout("tcp4", target.String(), 2*time.Second)
		a.Took = time.Since(start)
		if err != nil {
			a.Err = err
			return nil
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			a.Err = err
			return nil
		}
		a.From = c.RemoteAddr().String()
		a.Backend, a.SawClient, _ = strings.Cut(strings.TrimSpace(line), " ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// QueryUDP sends one datagram from an unconnected socket in namespace ns,
// so the answer's source is what the network carried.
func QueryUDP(t *testing.T, ns string, target netip.AddrPort) Answer {
	t.Helper()
	var a Answer
	err := Do(ns, func() error {
		c, err := net.ListenPacket("udp4", ":0")
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.WriteTo([]byte("q"), net.UDPAddrFromAddrPort(target)); err != nil {
			a.Err = err
			return nil
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		k, from, err := c.ReadFrom(buf)
		if err != nil {
			a.Err = err
			return nil
		}
		a.From = from.String()
		a.Backend, a.SawClient, _ = strings.Cut(string(buf[:k]), " ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
