package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/skiffnet/skiff/cni/netaddr"
)

// Gateway is the pod's default gateway: a link-local address no one holds.
// The pod reaches it through a permanent neighbour entry carrying the host
// veth's MAC, so every packet leaving the pod lands on the node, which then
// routes it (the approach of Calico and Cilium: no bridge, no address on
// the host side, one /32 route per pod).
var Gateway = netip.MustParseAddr("169.254.1.1")

// HostVethPrefix starts the name of every host-side veth skiff-cni makes.
const HostVethPrefix = "skf"

// HostVethName is the host side's name for a container's interface. It is
// derived from the attachment, so a retried ADD, a DEL without the
// namespace and GC all find the same link.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return HostVethPrefix + hex.EncodeToString(sum[:])[:12] // 15 bytes, the kernel's limit
}

// handles opens netlink handles in the current (node) namespace and in the
// pod's. Handles are bound to their namespace at creation, so no thread
// needs to switch namespaces while they are used.
func handles(podNS ns.NetNS) (host, pod *netlink.Handle, err error) {
	host, err = netlink.NewHandle()
	if err != nil {
		return nil, nil, fmt.Errorf("netlink in the node namespace: %w", err)
	}
	pod, err = netlink.NewHandleAt(netns.NsHandle(int(podNS.Fd())))
	if err != nil {
		host.Close()
		return nil, nil, fmt.Errorf("netlink in %s: %w", podNS.Path(), err)
	}
	return host, pod, nil
}

type attachment struct {
	hostName, ifName string
	ip               netip.Addr
	mtu              int
}

type links struct {
	host, pod netlink.Link
}

// setup wires the pod: a veth pair, the address, the default route through
// Gateway and the host's /32 route back. It first removes what an earlier,
// interrupted ADD for the same attachment may have left.
func setup(podNS ns.NetNS, a attachment) (links, error) {
	host, pod, err := handles(podNS)
	if err != nil {
		return links{}, err
	}
	defer host.Close()
	defer pod.Close()
	if l, err := host.LinkByName(a.hostName); err == nil {
		if err := host.LinkDel(l); err != nil {
			return links{}, fmt.Errorf("remove stale %s: %w", a.hostName, err)
		}
	}
	if l, err := pod.LinkByName(a.ifName); err == nil {
		if err := pod.LinkDel(l); err != nil {
			return links{}, fmt.Errorf("remove stale %s in the pod: %w", a.ifName, err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: a.hostName, MTU: a.mtu},
		PeerName:      a.ifName,
		PeerMTU:       uint32(a.mtu),
		PeerNamespace: netlink.NsFd(int(podNS.Fd())),
	}
	if err := host.LinkAdd(veth); err != nil {
		return links{}, fmt.Errorf("create veth %s/%s: %w", a.hostName, a.ifName, err)
	}
	var l links
	if l.host, err = host.LinkByName(a.hostName); err != nil {
		return l, fmt.Errorf("find %s: %w", a.hostName, err)
	}
	if l.pod, err = pod.LinkByName(a.ifName); err != nil {
		return l, fmt.Errorf("find %s in the pod: %w", a.ifName, err)
	}
	if err := host.LinkSetUp(l.host); err != nil {
		return l, fmt.Errorf("bring %s up: %w", a.hostName, err)
	}
	if lo, err := pod.LinkByName("lo"); err == nil {
		if err := pod.LinkSetUp(lo); err != nil {
			return l, fmt.Errorf("bring lo up in the pod: %w", err)
		}
	}
	addr := &netlink.Addr{IPNet: netaddr.IPNet(netip.PrefixFrom(a.ip, 32))}
	if err := pod.AddrAdd(l.pod, addr); err != nil {
		return l, fmt.Errorf("add %s to %s: %w", addr.IPNet, a.ifName, err)
	}
	if err := pod.LinkSetUp(l.pod); err != nil {
		return l, fmt.Errorf("bring %s up in the pod: %w", a.ifName, err)
	}
	if err := pod.NeighSet(&netlink.Neigh{
		LinkIndex:    l.pod.Attrs().Index,
		Family:       unix.AF_INET,
		State:        netlink.NUD_PERMANENT,
		IP:           Gateway.AsSlice(),
		HardwareAddr: l.host.Attrs().HardwareAddr,
	}); err != nil {
		return l, fmt.Errorf("add the gateway's neighbour entry in the pod: %w", err)
	}
	if err := pod.RouteReplace(defaultRoute(l.pod.Attrs().Index)); err != nil {
		return l, fmt.Errorf("add the pod's default route via %s: %w", Gateway, err)
	}
	if err := host.RouteReplace(hostRoute(l.host.Attrs().Index, a.ip)); err != nil {
		return l, fmt.Errorf("add host route %s/32 dev %s: %w", a.ip, a.hostName, err)
	}
	return l, nil
}

func defaultRoute(ifIndex int) *netlink.Route {
	return &netlink.Route{
		LinkIndex: ifIndex,
		Dst:       netaddr.IPNet(netip.MustParsePrefix("0.0.0.0/0")),
		Gw:        Gateway.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
	}
}

func hostRoute(ifIndex int, ip netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: ifIndex,
		Dst:       netaddr.IPNet(netip.PrefixFrom(ip, 32)),
		Scope:     netlink.SCOPE_LINK,
	}
}

// teardown removes the host veth (the kernel removes its peer and the /32
// route with it). A missing link is success: DEL must be idempotent.
func teardown(hostName string) error {
	l, err := netlink.LinkByName(hostName)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", hostName, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", hostName, err)
	}
	return nil
}

// check verifies what setup made is still there and returns what differs.
func check(podNS ns.NetNS, a attachment) error {
	host, pod, err := handles(podNS)
	if err != nil {
		return err
	}
	defer host.Close()
	defer pod.Close()
	var errs []error
	hl, err := host.LinkByName(a.hostName)
	if err != nil {
		return fmt.Errorf("host veth %s is missing: %w", a.hostName, err)
	}
	if hl.Attrs().Flags&net.FlagUp == 0 {
		errs = append(errs, fmt.Errorf("host veth %s is down", a.hostName))
	}
	pl, err := pod.LinkByName(a.ifName)
	if err != nil {
		return fmt.Errorf("pod interface %s is missing: %w", a.ifName, err)
	}
	if _, ok := pl.(*netlink.Veth); !ok {
		errs = append(errs, fmt.Errorf("pod interface %s is a %s, not a veth", a.ifName, pl.Type()))
	}
	if pl.Attrs().Flags&net.FlagUp == 0 {
		errs = append(errs, fmt.Errorf("pod interface %s is down", a.ifName))
	}
	addrs, err := pod.AddrList(pl, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", a.ifName, err)
	}
	want := netip.PrefixFrom(a.ip, 32)
	if !hasAddr(addrs, want) {
		errs = append(errs, fmt.Errorf("pod interface %s lacks %s", a.ifName, want))
	}
	if !hasRoute(pod, defaultRoute(pl.Attrs().Index)) {
		errs = append(errs, fmt.Errorf("pod has no default route via %s dev %s", Gateway, a.ifName))
	}
	if !hasRoute(host, hostRoute(hl.Attrs().Index, a.ip)) {
		errs = append(errs, fmt.Errorf("node has no route %s dev %s", want, a.hostName))
	}
	return errors.Join(errs...)
}

func hasAddr(addrs []netlink.Addr, want netip.Prefix) bool {
	for _, a := range addrs {
		if p, ok := netaddr.Prefix(a.IPNet); ok && p == want {
			return true
		}
	}
	return false
}

func hasRoute(h *netlink.Handle, want *netlink.Route) bool {
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: want.LinkIndex, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return false
	}
	wantDst, _ := netaddr.Prefix(want.Dst)
	for _, r := range routes {
		dst, ok := netaddr.Prefix(r.Dst)
		if !ok {
			dst = netip.MustParsePrefix("0.0.0.0/0")
		}
		if dst == wantDst && r.Gw.Equal(want.Gw) {
			return true
		}
	}
	return false
}

// deleteStaleVeths removes host veths of attachments not in keep (names
// from HostVethName), returning what it removed.
func deleteStaleVeths(keep map[string]bool) ([]string, error) {
	all, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var gone []string
	var errs []error
	for _, l := range all {
		name := l.Attrs().Name
		if _, veth := l.(*netlink.Veth); !veth || !strings.HasPrefix(name, HostVethPrefix) || keep[name] {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", name, err))
			continue
		}
		gone = append(gone, name)
	}
	return gone, errors.Join(errs...)
}

// defaultMTU is the MTU of the link the node's default route leaves by.
func defaultMTU() int {
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err == nil {
		for _, r := range routes {
			if p, ok := netaddr.Prefix(r.Dst); (ok && p.Bits() != 0) || r.LinkIndex == 0 {
				continue
			}
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU > 0 {
				return l.Attrs().MTU
			}
		}
	}
	return 1500
}
