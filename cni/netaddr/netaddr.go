// Package netaddr holds the small conversions and kernel switches that the
// CNI plugin and the route controller share: netip values to and from the
// net types netlink speaks, and IPv4 forwarding.
package netaddr

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// EnableForwarding turns on IPv4 forwarding in the current network
// namespace: pods are routed, so the node must forward their packets.
func EnableForwarding() error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}

// IPNet is p as netlink wants it.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Prefix is n as a netip.Prefix; false for nil or malformed input.
func Prefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
