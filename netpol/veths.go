package netpol

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skiffnet/skiff/cni/plugin"
)

// hostVeths maps local pod addresses to their host-side veths, read from
// the /32 routes skiff-cni installs through them: the one place that ties
// a pod's address to its interface whatever the container id.
func hostVeths() (map[netip.Addr]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		if n := l.Attrs().Name; strings.HasPrefix(n, plugin.HostVethPrefix) {
			names[l.Attrs().Index] = n
		}
	}
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := map[netip.Addr]string{}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if ones, bits := r.Dst.Mask.Size(); ones != 32 || bits != 32 {
			continue
		}
		name, ok := names[r.LinkIndex]
		ip, ok2 := netip.AddrFromSlice(r.Dst.IP.To4())
		if ok && ok2 {
			out[ip] = name
		}
	}
	return out, nil
}
