package bpf_test

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/bpf/bpftest"
)

// tc return codes (linux/pkt_cls.h).
const (
	actUnspec   = ^uint32(0) // TC_ACT_UNSPEC: not ours, next program or pass
	actOK       = 0
	actShot     = 2
	actRedirect = 7
)

// The programs run through BPF_PROG_TEST_RUN inside a namespace of the
// test's own, whose routes they consult (bpf_fib_lookup):
//
//	ext0  192.0.2.1/24    the external interface (a veth); default via 192.0.2.254
//	pod0  10.1.0.0/24     local pods, directly connected (as host veths are)
//	      10.2.0.0/24     another node's pods, via 192.0.2.12
var (
	nodeAddr   = netip.MustParseAddr("192.0.2.1")
	nodePort   = netip.AddrPortFrom(nodeAddr, 30080)
	client     = netip.MustParseAddrPort("198.51.100.7:40000")
	localPod   = netip.MustParseAddrPort("10.1.0.5:8080")
	localPod2  = netip.MustParseAddrPort("10.1.0.6:8080")
	remotePod  = netip.MustParseAddrPort("10.2.0.9:8080")
	externalIP = netip.MustParseAddrPort("203.0.113.10:80")
)

type tcNode struct {
	ns      string
	objs    *bpf.Objects
	np      *bpf.NodePort
	ifindex int
	nextID  uint32
	pins    string
}

func newTCNode(t *testing.T) *tcNode {
	t.Helper()
	ns := bpftest.Netns(t, "skiff-tc")
	bpftest.Sysctl(t, ns, "net.ipv4.ip_forward=1")
	for _, args := range [][]string{
		{"link", "add", "ext0", "type", "veth", "peer", "name", "ext0p"},
		// The test run classifies frames against the device's MAC
		// (eth_type_trans), as a real receive does.
		{"link", "set", "ext0", "address", net.HardwareAddr(macNode[:]).String()},
		{"addr", "add", "192.0.2.1/24", "dev", "ext0"},
		{"link", "set", "ext0", "up"},
		{"link", "set", "ext0p", "up"},
		{"link", "add", "pod0", "type", "veth", "peer", "name", "pod0p"},
		{"link", "set", "pod0", "up"},
		{"link", "set", "pod0p", "up"},
		{"route", "add", "10.1.0.0/24", "dev", "pod0"},
		{"route", "add", "10.2.0.0/24", "via", "192.0.2.12", "dev", "ext0"},
		{"route", "add", "default", "via", "192.0.2.254", "dev", "ext0"},
	} {
		bpftest.IP(t, ns, args...)
	}
	n := &tcNode{ns: ns, nextID: 1}
	n.load(t, filepath.Join(bpftest.BPFFS(t), "node"))
	return n
}

func (n *tcNode) load(t *testing.T, pins string) {
	t.Helper()
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
	err = bpftest.Do(n.ns, func() error {
		dev, err := net.InterfaceByName("ext0")
		if err != nil {
			return err
		}
		n.ifindex = dev.Index
		return np.Attach([]bpf.Interface{{Name: "ext0", SNAT: nodeAddr}})
	})
	if err != nil {
		t.Fatal(err)
	}
	n.objs, n.np, n.pins = objs, np, pins
}

// frontend writes an external-scope frontend and its backends.
func (n *tcNode) frontend(t *testing.T, fe netip.AddrPort, proto uint8, flags uint16, backends ...netip.AddrPort) uint32 {
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
	if err := n.objs.RevNat.Put(id, bpf.Frontend{Addr: bpf.Addr4(fe.Addr()), Port: bpf.Port(fe.Port())}); err != nil {
		t.Fatal(err)
	}
	key := bpf.ServiceKey{Addr: bpf.Addr4(fe.Addr()), Port: bpf.Port(fe.Port()), Proto: proto, Scope: bpf.ScopeExternal}
	val := bpf.Service{Id: id, Count: uint16(len(backends)), Flags: flags, AffinityTimeout: 60}
	if err := n.objs.Services.Put(key, val); err != nil {
		t.Fatal(err)
	}
	return id
}

// run runs prog on p as if it arrived on (or left through) ext0.
func (n *tcNode) run(t *testing.T, prog *ebpf.Program, p packet) (uint32, []byte) {
	t.Helper()
	in := p.bytes()
	out := make([]byte, len(in)+64)
	// struct __sk_buff up to cb[]: ifindex is the 11th field.
	skb := make([]uint32, 12)
	skb[10] = uint32(n.ifindex)
	opts := &ebpf.RunOptions{Data: in, DataOut: out, Context: skb}
	var ret uint32
	err := bpftest.Do(n.ns, func() error {
		var err error
		ret, err = prog.Run(opts)
		return err
	})
	if err != nil {
		t.Fatalf("run %s: %v", prog, err)
	}
	return ret, opts.DataOut
}

func (n *tcNode) stats(t *testing.T) [8]uint64 {
	t.Helper()
	s, err := n.np.ReadStats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func syn(src, dst netip.AddrPort) packet {
	return packet{Src: src, Dst: dst, Proto: unix.IPPROTO_TCP, Flags: tcpSYN, Seq: 1000}
}

func TestNodePortDNATToLocalPod(t *testing.T) {
	n := newTCNode(t)
	n.frontend(t, nodePort, unix.IPPROTO_TCP, 0, localPod)

	ret, out := n.run(t, n.np.Ingress, syn(client, nodePort))
	f := parsePacket(t, out)
	if ret != actOK || f.Dst != localPod || f.Src != client {
		t.Fatalf("SYN to the NodePort: ret %d, %s; want TC_ACT_OK to %s from the client's own %s", int32(ret), f, localPod, client)
	}

	// The pod's reply leaves through ext0: it must come from the NodePort.
	reply := packet{Src: localPod, Dst: client, Proto: unix.IPPROTO_TCP, Flags: tcpSYN | tcpACK, Seq: 5000, Ack: 1001}
	ret, out = n.run(t, n.np.Egress, reply)
	if f := parsePacket(t, out); ret != actOK || f.Src != nodePort || f.Dst != client || f.Seq != 5000 {
		t.Fatalf("reply leaving ext0: ret %d, %s; want it from %s to %s", int32(ret), f, nodePort, client)
	}

	// The pod talking to the client on another connection is not touched.
	other := packet{Src: localPod, Dst: netip.AddrPortFrom(client.Addr(), 40001), Proto: unix.IPPROTO_TCP, Flags: tcpACK}
	if ret, out = n.run(t, n.np.Egress, other); ret != actUnspec || parsePacket(t, out).Src != localPod {
		t.Errorf("unrelated packet leaving ext0: ret %d, want TC_ACT_UNSPEC and no change", int32(ret))
	}
	if s := n.stats(t); s[bpf.NPDNATLocal] != 1 || s[bpf.NPRevNat] != 1 {
		t.Errorf("stats %v: want 1 local DNAT and 1 reverse NAT", s)
	}
}

func TestNodePortConntrackKeepsFlowsOnTheirBackend(t *testing.T) {
	n := newTCNode(t)
	n.frontend(t, nodePort, unix.IPPROTO_TCP, 0, localPod, localPod2)

	seen := map[netip.AddrPort]int{}
	for i := range 40 {
		src := netip.AddrPortFrom(client.Addr(), uint16(41000+i))
		_, out := n.run(t, n.np.Ingress, syn(src, nodePort))
		first := parsePacket(t, out).Dst
		seen[first]++
		for range 3 {
			ack := packet{Src: src, Dst: nodePort, Proto: unix.IPPROTO_TCP, Flags: tcpACK, Seq: 1001, Payload: []byte("GET /")}
			ret, out := n.run(t, n.np.Ingress, ack)
			if f := parsePacket(t, out); ret != actOK || f.Dst != first || string(f.Payload) != "GET /" {
				t.Fatalf("later packet of flow %s: ret %d, %s; want it to follow the SYN to %s", src, int32(ret), f, first)
			}
		}
	}
	if seen[localPod] < 5 || seen[localPod2] < 5 {
		t.Errorf("40 flows over 2 backends: %v", seen)
	}

	// A backend that goes away is re-picked for the flows it had.
	n.objs.Slots.Put(bpf.SlotKey{Id: 1, Slot: 1}, uint32(102))
	n.objs.Services.Update(bpf.ServiceKey{Addr: bpf.Addr4(nodeAddr), Port: bpf.Port(30080), Proto: unix.IPPROTO_TCP},
		bpf.Service{Id: 1, Count: 1, AffinityTimeout: 60}, ebpf.UpdateExist)
	if err := n.objs.Backends.Delete(uint32(101)); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		src := netip.AddrPortFrom(client.Addr(), uint16(41000+i))
		_, out := n.run(t, n.np.Ingress, packet{Src: src, Dst: nodePort, Proto: unix.IPPROTO_TCP, Flags: tcpACK})
		if f := parsePacket(t, out); f.Dst != localPod2 {
			t.Fatalf("flow %s after its backend went away: %s, want %s", src, f, localPod2)
		}
	}
}

func TestNodePortSNATToRemoteBackend(t *testing.T) {
	n := newTCNode(t)
	n.frontend(t, nodePort, unix.IPPROTO_TCP, 0, remotePod)

	ret, out := n.run(t, n.np.Ingress, syn(client, nodePort))
	f := parsePacket(t, out)
	if ret != actRedirect || f.Dst != remotePod || f.Src.Addr() != nodeAddr ||
		f.Src.Port() < bpf.SNATPortMin || f.Src.Port() > bpf.SNATPortMax {
		t.Fatalf("SYN for a remote backend: ret %d, %s; want a redirect to %s from %s:%d-%d",
			int32(ret), f, remotePod, nodeAddr, bpf.SNATPortMin, bpf.SNATPortMax)
	}
	snat := f.Src

	// Later packets keep the same translation.
	ack := packet{Src: client, Dst: nodePort, Proto: unix.IPPROTO_TCP, Flags: tcpACK, Seq: 1001, Ack: 5001}
	if ret, out := n.run(t, n.np.Ingress, ack); ret != actRedirect || parsePacket(t, out).Src != snat {
		t.Fatalf("second packet: ret %d, %s; want it from %s again", int32(ret), parsePacket(t, out), snat)
	}

	// The backend's reply arrives on ext0 and goes back to the client
	// from the NodePort.
	reply := packet{Src: remotePod, Dst: snat, Proto: unix.IPPROTO_TCP, Flags: tcpSYN | tcpACK, Seq: 5000, Ack: 1001}
	ret, out = n.run(t, n.np.Ingress, reply)
	if f := parsePacket(t, out); ret != actRedirect || f.Src != nodePort || f.Dst != client {
		t.Fatalf("reply of the remote backend: ret %d, %s; want a redirect from %s to %s", int32(ret), f, nodePort, client)
	}
	if s := n.stats(t); s[bpf.NPDNATSNAT] != 1 || s[bpf.NPRevNat] != 1 {
		t.Errorf("stats %v: want 1 SNAT flow and 1 reverse NAT", s)
	}
}

func TestNodePortUDP(t *testing.T) {
	n := newTCNode(t)
	fe := netip.AddrPortFrom(nodeAddr, 30053)
	n.frontend(t, fe, unix.IPPROTO_UDP, 0, netip.MustParseAddrPort("10.1.0.5:53"))
	for _, noCsum := range []bool{false, true} {
		src := netip.AddrPortFrom(client.Addr(), 50000)
		if noCsum {
			src = netip.AddrPortFrom(client.Addr(), 50001)
		}
		q := packet{Src: src, Dst: fe, Proto: unix.IPPROTO_UDP, Payload: []byte("query"), NoCsum: noCsum}
		ret, out := n.run(t, n.np.Ingress, q)
		if f := parsePacket(t, out); ret != actOK || f.Dst.String() != "10.1.0.5:53" || f.NoCsum != noCsum {
			t.Fatalf("datagram (no checksum: %v): ret %d, %s (no checksum: %v)", noCsum, int32(ret), f, f.NoCsum)
		}
		a := packet{Src: netip.MustParseAddrPort("10.1.0.5:53"), Dst: src, Proto: unix.IPPROTO_UDP, Payload: []byte("answer"), NoCsum: noCsum}
		ret, out = n.run(t, n.np.Egress, a)
		if f := parsePacket(t, out); ret != actOK || f.Src != fe || f.NoCsum != noCsum {
			t.Fatalf("answer: ret %d, %s (no checksum: %v), want it from %s", int32(ret), f, f.NoCsum, fe)
		}
	}
}

func TestNodePortWithoutEndpoints(t *testing.T) {
	n := newTCNode(t)
	n.frontend(t, nodePort, unix.IPPROTO_TCP, 0)
	ret, out := n.run(t, n.np.Ingress, syn(client, nodePort))
	f := parsePacket(t, out)
	if ret != actRedirect || f.Flags != tcpRST|tcpACK || f.Src != nodePort || f.Dst != client || f.Ack != 1001 || f.Seq != 0 {
		t.Fatalf("SYN to a NodePort without endpoints: ret %d, %s; want a RST|ACK from %s acking 1001 sent back", int32(ret), f, nodePort)
	}
	if f.DstMAC != macClient || f.SrcMAC != macNode {
		t.Errorf("RST goes from %x to %x, want the MACs swapped", f.SrcMAC, f.DstMAC)
	}
	// Not a SYN: nothing to answer.
	if ret, _ := n.run(t, n.np.Ingress, packet{Src: client, Dst: nodePort, Proto: unix.IPPROTO_TCP, Flags: tcpACK}); ret != actShot {
		t.Errorf("ACK without endpoints: ret %d, want TC_ACT_SHOT", int32(ret))
	}
	udp := netip.AddrPortFrom(nodeAddr, 30053)
	n.frontend(t, udp, unix.IPPROTO_UDP, 0)
	if ret, _ := n.run(t, n.np.Ingress, packet{Src: client, Dst: udp, Proto: unix.IPPROTO_UDP}); ret != actShot {
		t.Errorf("datagram without endpoints: ret %d, want TC_ACT_SHOT", int32(ret))
	}
	// externalTrafficPolicy Local without a local endpoint drops, as
	// kube-proxy does.
	n.frontend(t, externalIP, unix.IPPROTO_TCP, bpf.FlagNoLocal)
	if ret, _ := n.run(t, n.np.Ingress, syn(client, externalIP)); ret != actShot {
		t.Errorf("SYN without a local endpoint: ret %d, want TC_ACT_SHOT", int32(ret))
	}
	if s := n.stats(t); s[bpf.NPReject] != 1 || s[bpf.NPDropNoEndpoints] != 1 || s[bpf.NPDropNoLocal] != 1 {
		t.Errorf("stats %v", s)
	}
}

func TestNodePortLeavesOtherTrafficAlone(t *testing.T) {
	n := newTCNode(t)
	n.frontend(t, nodePort, unix.IPPROTO_TCP, 0, localPod)
	for _, p := range []packet{
		syn(client, netip.AddrPortFrom(nodeAddr, 22)),                                       // another port
		{Src: client, Dst: nodePort, Proto: unix.IPPROTO_UDP},                               // another protocol
		syn(client, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), 30080)),            // another address
		{Src: remotePod, Dst: netip.AddrPortFrom(nodeAddr, 61000), Proto: unix.IPPROTO_TCP}, // no SNAT flow
	} {
		ret, out := n.run(t, n.np.Ingress, p)
		if f := parsePacket(t, out); ret != actUnspec || f.Src != p.Src || f.Dst != p.Dst {
			t.Errorf("%s: ret %d, %s; want TC_ACT_UNSPEC and no change", p, int32(ret), f)
		}
	}
}

// A frame flooded to this node for another host's MAC (the bridge lost
// track of a dead node's port) is not this node's to serve: answering
// it would answer for an address another node announces.
func TestNodePortIgnoresFramesForOtherHosts(t *testing.T) {
	n := newTCNode(t)
	n.frontend(t, nodePort, unix.IPPROTO_TCP, 0, localPod)
	n.frontend(t, externalIP, unix.IPPROTO_TCP, 0, remotePod)
	for _, fe := range []netip.AddrPort{nodePort, externalIP} {
		p := syn(client, fe)
		p.OtherHost = true
		ret, out := n.run(t, n.np.Ingress, p)
		if f := parsePacket(t, out); ret != actUnspec || f.Dst != fe {
			t.Errorf("SYN to %s in a frame for %x: ret %d, %s; want TC_ACT_UNSPEC and no change", fe, macOther, int32(ret), f)
		}
	}
	if s := n.stats(t); s != [8]uint64{} {
		t.Errorf("stats %v after frames for another host, want none counted", s)
	}
	// The same SYN for this node's MAC is served.
	if ret, _ := n.run(t, n.np.Ingress, syn(client, nodePort)); ret != actOK {
		t.Errorf("SYN for this node's MAC: ret %d, want TC_ACT_OK", int32(ret))
	}
}

func TestNodePortClientIPAffinity(t *testing.T) {
	n := newTCNode(t)
	n.frontend(t, nodePort, unix.IPPROTO_TCP, bpf.FlagAffinity, localPod, localPod2)
	var first netip.AddrPort
	for i := range 20 {
		_, out := n.run(t, n.np.Ingress, syn(netip.AddrPortFrom(client.Addr(), uint16(42000+i)), nodePort))
		dst := parsePacket(t, out).Dst
		if i == 0 {
			first = dst
		} else if dst != first {
			t.Fatalf("connection %d of one client went to %s, the first to %s", i, dst, first)
		}
	}
}

func TestConntrackGC(t *testing.T) {
	n := newTCNode(t)
	n.frontend(t, nodePort, unix.IPPROTO_TCP, 0, localPod)
	n.run(t, n.np.Ingress, syn(client, nodePort))
	entries := func() map[bpf.CTKey]bpf.CTVal {
		m := map[bpf.CTKey]bpf.CTVal{}
		var k bpf.CTKey
		var v bpf.CTVal
		for it := n.np.CT.Iterate(); it.Next(&k, &v); {
			m[k] = v
		}
		return m
	}
	all := entries()
	if len(all) != 2 {
		t.Fatalf("conntrack after one SYN: %v, want a forward and a reply entry", all)
	}
	var fwd, rep bpf.CTKey
	for k, v := range all {
		if v.Flags&bpf.CTReply != 0 {
			rep = k
		} else {
			fwd = k
		}
		if left := time.Duration(v.Expires) - bpf.Monotonic(); left < 50*time.Second || left > 61*time.Second {
			t.Errorf("%s expires in %s, want a SYN's 60 s", k, left)
		}
	}
	if bpf.Partner(fwd, all[fwd]) != rep || bpf.Partner(rep, all[rep]) != fwd {
		t.Fatalf("entries %s and %s are not each other's partner", fwd, rep)
	}
	setExpiry := func(k bpf.CTKey, d time.Duration) {
		v := all[k]
		v.Expires = uint64(bpf.Monotonic() + d)
		if err := n.np.CT.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	// One half expired, the other alive: both stay.
	setExpiry(fwd, -time.Second)
	if del, left, err := n.np.GC(); err != nil || del != 0 || left != 2 {
		t.Fatalf("GC with the reply half alive: deleted %d, left %d, %v; want 0, 2", del, left, err)
	}
	// An orphaned reply entry goes once expired.
	orphan := bpf.CTKey{Saddr: bpf.Addr4(localPod2.Addr()), Daddr: bpf.Addr4(client.Addr()), Sport: bpf.Port(8080), Dport: bpf.Port(1), Proto: unix.IPPROTO_TCP, Dir: bpf.CTEgress}
	if err := n.np.CT.Put(orphan, bpf.CTVal{Flags: bpf.CTReply, Expires: uint64(bpf.Monotonic() - time.Second)}); err != nil {
		t.Fatal(err)
	}
	if del, left, err := n.np.GC(); err != nil || del != 1 || left != 2 {
		t.Fatalf("GC with an expired orphan: deleted %d, left %d, %v; want 1, 2", del, left, err)
	}
	setExpiry(rep, -time.Second)
	if del, left, err := n.np.GC(); err != nil || del != 2 || left != 0 {
		t.Fatalf("GC with both halves expired: deleted %d, left %d, %v; want 2, 0", del, left, err)
	}
}

// An agent restart loads the programs again over the pins: links are
// updated in place and the conntrack table is kept.
func TestNodePortReloadKeepsConntrack(t *testing.T) {
	n := newTCNode(t)
	n.frontend(t, nodePort, unix.IPPROTO_TCP, 0, remotePod)
	_, out := n.run(t, n.np.Ingress, syn(client, nodePort))
	snat := parsePacket(t, out).Src

	n.load(t, n.pins)
	ack := packet{Src: client, Dst: nodePort, Proto: unix.IPPROTO_TCP, Flags: tcpACK}
	if _, out := n.run(t, n.np.Ingress, ack); parsePacket(t, out).Src != snat {
		t.Fatalf("after a reload the flow left from %s, want %s as before", parsePacket(t, out).Src, snat)
	}
	links, _ := filepath.Glob(filepath.Join(n.pins, "link_tcx_*"))
	if len(links) != 2 {
		t.Errorf("pinned tc links %v, want ingress and egress of ext0", links)
	}
}

// An overlay device made after the agent starts is attached once it
// exists; a replies-only interface gets no SNAT address.
func TestNodePortAttachLater(t *testing.T) {
	n := newTCNode(t)
	ifaces := []bpf.Interface{{Name: "ext0", SNAT: nodeAddr}, {Name: "vx0"}}
	attach := func() error { return bpftest.Do(n.ns, func() error { return n.np.Attach(ifaces) }) }
	if err := attach(); !errors.Is(err, bpf.ErrInterfaceMissing) {
		t.Fatalf("attach with vx0 missing: %v, want ErrInterfaceMissing", err)
	}
	bpftest.IP(t, n.ns, "link", "add", "vx0", "type", "veth", "peer", "name", "vx0p")
	if err := attach(); err != nil {
		t.Fatal(err)
	}
	links, _ := filepath.Glob(filepath.Join(n.pins, "link_tcx_*"))
	if len(links) != 4 {
		t.Errorf("pinned tc links %v, want ingress and egress of ext0 and vx0", links)
	}
	var idx uint32
	var v bpf.Iface
	var got []uint32
	for it := n.np.Ifaces.Iterate(); it.Next(&idx, &v); {
		got = append(got, idx)
	}
	if len(got) != 1 || got[0] != uint32(n.ifindex) {
		t.Errorf("lb4_ifaces holds %v, want only ext0 (%d)", got, n.ifindex)
	}
	// Dropping an interface from the list detaches it.
	ifaces = ifaces[:1]
	if err := attach(); err != nil {
		t.Fatal(err)
	}
	if links, _ := filepath.Glob(filepath.Join(n.pins, "link_tcx_*")); len(links) != 2 {
		t.Errorf("pinned tc links %v after dropping vx0, want ext0's two", links)
	}
}
