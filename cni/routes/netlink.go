package routes

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skiffnet/skiff/cni/netaddr"
)

const (
	// DeviceName is the VXLAN device in ModeVXLAN.
	DeviceName = "skiff-vxlan"
	// VNI is the overlay's VXLAN network identifier.
	VNI = 1
	// VXLANPort is the UDP port of the overlay (IANA's).
	VXLANPort = 4789
	// VXLANOverhead is what encapsulation adds to each packet (outer
	// Ethernet, IPv4, UDP and VXLAN headers).
	VXLANOverhead = 50
	// Proto marks Skiff's routes (rtnetlink protocol number), so a restarted
	// agent finds and removes the ones it no longer wants without keeping
	// state of its own.
	Proto netlink.RouteProtocol = 0x53
)

// Netlink applies Desired to the namespace it was created in.
type Netlink struct {
	h      *netlink.Handle
	mode   Mode
	nodeIP netip.Addr
}

// NewNetlink opens a netlink handle in the calling thread's network
// namespace; Apply works there whatever thread calls it later.
func NewNetlink(mode Mode, nodeIP netip.Addr) (*Netlink, error) {
	if mode != ModeRouted && mode != ModeVXLAN {
		return nil, fmt.Errorf("pod network mode %q: want routed or vxlan", mode)
	}
	if !nodeIP.Is4() {
		return nil, fmt.Errorf("node address %s: want an IPv4 address", nodeIP)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &Netlink{h: h, mode: mode, nodeIP: nodeIP}, nil
}

// Close releases the netlink handle; routes stay, so pods keep their
// connectivity while the agent restarts.
func (n *Netlink) Close() { n.h.Close() }

// Apply makes the node's routes (and in ModeVXLAN the device, forwarding
// and neighbour entries) match d, removing what earlier states left.
func (n *Netlink) Apply(d Desired) error {
	want := map[netip.Prefix]*netlink.Route{}
	var errs []error
	switch n.mode {
	case ModeRouted:
		if err := n.deleteDevice(); err != nil {
			return err
		}
		for _, p := range d.Peers {
			want[p.PodCIDR] = &netlink.Route{
				Dst: netaddr.IPNet(p.PodCIDR), Gw: p.NodeIP.AsSlice(), Protocol: Proto, Table: unix.RT_TABLE_MAIN,
			}
		}
	case ModeVXLAN:
		vx, err := n.ensureDevice(d.Self)
		if err != nil {
			return err
		}
		if err := n.syncNeighbours(vx, d.Peers); err != nil {
			errs = append(errs, err)
		}
		for _, p := range d.Peers {
			want[p.PodCIDR] = &netlink.Route{
				LinkIndex: vx.Attrs().Index, Dst: netaddr.IPNet(p.PodCIDR), Gw: p.VTEP().AsSlice(),
				Flags: int(netlink.FLAG_ONLINK), Protocol: Proto, Table: unix.RT_TABLE_MAIN,
			}
		}
	}
	have, err := n.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Protocol: Proto, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range have {
		dst, ok := netaddr.Prefix(r.Dst)
		if w := want[dst]; ok && w != nil && r.Gw.Equal(w.Gw) && (w.LinkIndex == 0 || w.LinkIndex == r.LinkIndex) {
			delete(want, dst) // already right
			continue
		}
		if err := n.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", r.Dst, err))
		}
	}
	for dst, r := range want {
		if err := n.h.RouteReplace(r); err != nil {
			if n.mode == ModeRouted && errors.Is(err, unix.ENETUNREACH) {
				err = fmt.Errorf("%w: the node is not on a link of this node; use --pod-network=vxlan when nodes do not share a link", err)
			}
			errs = append(errs, fmt.Errorf("route %s via %s: %w", dst, r.Gw, err))
		}
	}
	return errors.Join(errs...)
}

// ensureDevice creates or repairs the VXLAN device for self.
func (n *Netlink) ensureDevice(self Peer) (netlink.Link, error) {
	if !self.PodCIDR.IsValid() {
		return nil, errors.New("this node has no pod range yet, so no VXLAN address")
	}
	parent, err := n.linkWithAddr(n.nodeIP)
	if err != nil {
		return nil, err
	}
	self.NodeIP = n.nodeIP
	spec := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{
			Name: DeviceName, MTU: parent.Attrs().MTU - VXLANOverhead, HardwareAddr: self.VTEPMAC(),
		},
		VxlanId: VNI, VtepDevIndex: parent.Attrs().Index, SrcAddr: n.nodeIP.AsSlice(), Port: VXLANPort,
		Learning: false,
	}
	l, err := n.h.LinkByName(DeviceName)
	if err == nil && !sameVXLAN(l, spec) {
		if err := n.h.LinkDel(l); err != nil {
			return nil, fmt.Errorf("replace %s: %w", DeviceName, err)
		}
		err = netlink.LinkNotFoundError{}
	}
	if err != nil {
		if err := n.h.LinkAdd(spec); err != nil {
			return nil, fmt.Errorf("create %s: %w", DeviceName, err)
		}
		if l, err = n.h.LinkByName(DeviceName); err != nil {
			return nil, fmt.Errorf("find %s: %w", DeviceName, err)
		}
	}
	addr := netip.PrefixFrom(self.VTEP(), 32)
	addrs, err := n.h.AddrList(l, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", DeviceName, err)
	}
	for _, a := range addrs {
		if p, _ := netaddr.Prefix(a.IPNet); p != addr {
			n.h.AddrDel(l, &a)
		}
	}
	if err := n.h.AddrReplace(l, &netlink.Addr{IPNet: netaddr.IPNet(addr)}); err != nil {
		return nil, fmt.Errorf("address %s on %s: %w", addr, DeviceName, err)
	}
	if err := n.h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("bring %s up: %w", DeviceName, err)
	}
	return l, nil
}

func sameVXLAN(l netlink.Link, want *netlink.Vxlan) bool {
	v, ok := l.(*netlink.Vxlan)
	return ok && v.VxlanId == want.VxlanId && v.VtepDevIndex == want.VtepDevIndex && v.SrcAddr.Equal(want.SrcAddr) &&
		v.Port == want.Port && v.MTU == want.MTU && bytes.Equal(v.HardwareAddr, want.HardwareAddr) && !v.Learning
}

// syncNeighbours programs, per peer, the forwarding entry (its MAC lives
// behind its node address) and the neighbour entry (its VTEP has that
// MAC), so the kernel never floods or asks; others are removed.
func (n *Netlink) syncNeighbours(vx netlink.Link, peers []Peer) error {
	idx := vx.Attrs().Index
	fdb := map[string]netip.Addr{} // MAC → node address
	arp := map[netip.Addr]string{} // VTEP → MAC
	var errs []error
	for _, p := range peers {
		mac := p.VTEPMAC()
		fdb[mac.String()] = p.NodeIP
		arp[p.VTEP()] = mac.String()
		if err := n.h.NeighSet(&netlink.Neigh{
			LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
			IP: p.NodeIP.AsSlice(), HardwareAddr: mac,
		}); err != nil {
			errs = append(errs, fmt.Errorf("forwarding entry for node %s: %w", p.Node, err))
		}
		if err := n.h.NeighSet(&netlink.Neigh{
			LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: p.VTEP().AsSlice(), HardwareAddr: mac,
		}); err != nil {
			errs = append(errs, fmt.Errorf("neighbour entry for node %s: %w", p.Node, err))
		}
	}
	have, err := n.h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list forwarding entries of %s: %w", DeviceName, err)
	}
	for _, e := range have {
		ip, _ := netip.AddrFromSlice(e.IP)
		if want, ok := fdb[e.HardwareAddr.String()]; (ok && want == ip.Unmap()) || e.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		if err := n.h.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove forwarding entry %s: %w", e.HardwareAddr, err))
		}
	}
	have, err = n.h.NeighList(idx, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list neighbours of %s: %w", DeviceName, err)
	}
	for _, e := range have {
		ip, _ := netip.AddrFromSlice(e.IP)
		if want, ok := arp[ip.Unmap()]; ok && want == e.HardwareAddr.String() {
			continue
		}
		if err := n.h.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove neighbour %s: %w", e.IP, err))
		}
	}
	return errors.Join(errs...)
}

func (n *Netlink) deleteDevice() error {
	l, err := n.h.LinkByName(DeviceName)
	if err != nil {
		return nil
	}
	if err := n.h.LinkDel(l); err != nil {
		return fmt.Errorf("remove %s (the pod network is routed now): %w", DeviceName, err)
	}
	return nil
}

func (n *Netlink) linkWithAddr(ip netip.Addr) (netlink.Link, error) {
	addrs, err := n.h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := netaddr.Prefix(a.IPNet); ok && p.Addr() == ip {
			return n.h.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no link of this node holds the node address %s: check --node-ip", ip)
}

// PodMTU is the MTU pods should use: the MTU of the link holding nodeIP,
// less the encapsulation in ModeVXLAN. It looks in the calling thread's
// network namespace.
func PodMTU(mode Mode, nodeIP netip.Addr) (int, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return 0, fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	l, err := (&Netlink{h: h}).linkWithAddr(nodeIP)
	if err != nil {
		return 0, err
	}
	mtu := l.Attrs().MTU
	if mode == ModeVXLAN {
		mtu -= VXLANOverhead
	}
	return mtu, nil
}
