// Package routes connects the pod ranges of a cluster's nodes: every node
// routes each other node's PodCIDR to that node, directly over the shared
// link (ModeRouted) or through a VXLAN overlay (ModeVXLAN, like flannel's
// vxlan backend), and masquerades pod traffic that leaves the cluster.
//
// It reads as watch → model → apply: a Node informer feeds Build, which
// turns Node objects into the desired state in plain Go, and an applier
// (netlink for routes, nftables for masquerading) makes the kernel match.
package routes

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Mode is how pod traffic crosses between nodes.
type Mode string

const (
	// ModeRouted routes each node's pod range via the node's address; the
	// nodes must share a link (one L2 segment).
	ModeRouted Mode = "routed"
	// ModeVXLAN encapsulates pod traffic in VXLAN between node addresses,
	// which need only be reachable over IP.
	ModeVXLAN Mode = "vxlan"
)

// Peer is one node as the pod network sees it.
type Peer struct {
	Node    string
	NodeIP  netip.Addr   // where the node is reached (its InternalIP)
	PodCIDR netip.Prefix // the node's pod range
}

// VTEP is the node's overlay address: the first host address of its pod
// range, which cni/ipam never hands to a pod. It sits on the node's VXLAN
// device, and other nodes route the pod range via it.
func (p Peer) VTEP() netip.Addr { return p.PodCIDR.Masked().Addr().Next() }

// VTEPMAC is the node's VXLAN device address, derived from its node
// address so that no node needs to publish it: 0e:73 (locally
// administered, unicast) followed by the IPv4 address.
func (p Peer) VTEPMAC() net.HardwareAddr {
	a := p.NodeIP.As4()
	return net.HardwareAddr{0x0e, 0x73, a[0], a[1], a[2], a[3]}
}

// Desired is the pod network state one node should have.
type Desired struct {
	Self  Peer
	Peers []Peer // every other node with an address and a pod range, by pod range
	// NodeIPs are the addresses of all nodes: pod traffic to them is not
	// masqueraded, so nodes see the real pod address.
	NodeIPs []netip.Addr
}

// Build computes the desired state of node self from the cluster's Nodes.
// nodeIP, when valid, overrides self's address from its Node object (the
// agent knows it before the Node is registered). Nodes that cannot be
// routed yet (no address, no pod range, or a range that overlaps another)
// are left out, each with a reason in skipped.
func Build(self string, nodeIP netip.Addr, nodes []*corev1.Node) (d Desired, skipped []error) {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b *corev1.Node) int { return cmp.Compare(a.Name, b.Name) })
	var peers []Peer
	for _, n := range sorted {
		p := Peer{Node: n.Name, NodeIP: NodeAddress(n), PodCIDR: PodCIDR(n)}
		if n.Name == self {
			if nodeIP.IsValid() {
				p.NodeIP = nodeIP
			}
			d.Self = p
		}
		if p.NodeIP.IsValid() {
			d.NodeIPs = append(d.NodeIPs, p.NodeIP)
		}
		if n.Name == self {
			continue
		}
		switch {
		case !p.NodeIP.IsValid():
			skipped = append(skipped, fmt.Errorf("node %s has no IPv4 InternalIP yet", n.Name))
		case !p.PodCIDR.IsValid():
			skipped = append(skipped, fmt.Errorf("node %s has no IPv4 pod range (spec.podCIDR) yet", n.Name))
		default:
			peers = append(peers, p)
		}
	}
	if d.Self.Node == "" {
		d.Self = Peer{Node: self, NodeIP: nodeIP}
		if nodeIP.IsValid() {
			d.NodeIPs = append(d.NodeIPs, nodeIP)
		}
	}
	// A range that overlaps this node's or an earlier node's would steal
	// their traffic: leave it out rather than guess.
	taken := []Peer{}
	if d.Self.PodCIDR.IsValid() {
		taken = append(taken, d.Self)
	}
	for _, p := range peers {
		if i := slices.IndexFunc(taken, func(t Peer) bool { return t.PodCIDR.Overlaps(p.PodCIDR) }); i >= 0 {
			skipped = append(skipped, fmt.Errorf("node %s's pod range %s overlaps node %s's %s", p.Node, p.PodCIDR, taken[i].Node, taken[i].PodCIDR))
			continue
		}
		taken = append(taken, p)
		d.Peers = append(d.Peers, p)
	}
	slices.SortFunc(d.Peers, func(a, b Peer) int { return a.PodCIDR.Addr().Compare(b.PodCIDR.Addr()) })
	slices.SortFunc(d.NodeIPs, netip.Addr.Compare)
	d.NodeIPs = slices.Compact(d.NodeIPs)
	return d, skipped
}

// NodeAddress is a Node's IPv4 InternalIP, else its IPv4 ExternalIP.
func NodeAddress(n *corev1.Node) netip.Addr {
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type != t {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Unmap().Is4() {
				return ip.Unmap()
			}
		}
	}
	return netip.Addr{}
}

// PodCIDR is a Node's IPv4 pod range: spec.podCIDR, else the first IPv4
// entry of spec.podCIDRs.
func PodCIDR(n *corev1.Node) netip.Prefix {
	for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			return p.Masked()
		}
	}
	return netip.Prefix{}
}
