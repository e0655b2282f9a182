package gatewayaddr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Proto marks the local routes Skiff adds for Gateway addresses (an
// rtnetlink protocol number of its own), so a restarted agent, and
// `skiff uninstall`, find exactly those and no others.
const Proto netlink.RouteProtocol = 0x54

// Local makes Gateway addresses local to this node's network namespace:
// a route of type local in the kernel's local table, the way the kernel
// itself marks an interface's addresses, but on no interface. The proxy's
// wildcard listeners then accept connections to them, and Linux answers
// nothing it would not answer for its own addresses. Unlike an address on
// lo, a local route is never picked as a source address.
type Local struct {
	mu   sync.Mutex
	have []netip.Addr // sorted; nil until the first Sync read the kernel
	lo   int
}

// NewLocal finds the loopback device the routes point at.
func NewLocal() (*Local, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("gateway addresses: find lo: %w", err)
	}
	return &Local{lo: lo.Attrs().Index}, nil
}

// Sync makes exactly want local: it adds the missing routes and removes
// the ones of Gateways that went away. It does nothing while want does
// not change, so a route table rebuild costs no netlink call.
func (l *Local) Sync(want []netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	want = normalize(want)
	if l.have != nil && slices.Equal(l.have, want) {
		return nil
	}
	have, err := list()
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range want {
		if !slices.Contains(have, a) {
			if err := netlink.RouteReplace(l.route(a)); err != nil {
				errs = append(errs, fmt.Errorf("gateway address %s: add local route: %w", a, err))
			}
		}
	}
	for _, a := range have {
		if !slices.Contains(want, a) {
			if err := netlink.RouteDel(l.route(a)); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("gateway address %s: remove local route: %w", a, err))
			}
		}
	}
	if len(errs) > 0 {
		l.have = nil // read the kernel again next time
		return errors.Join(errs...)
	}
	l.have = want
	return nil
}

func (l *Local) route(a netip.Addr) *netlink.Route {
	bits := 32
	if a.Is6() {
		bits = 128
	}
	return &netlink.Route{
		LinkIndex: l.lo,
		Dst:       &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)},
		Table:     unix.RT_TABLE_LOCAL,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Protocol:  Proto,
	}
}

// Flush removes every local route Skiff added for Gateway addresses in the
// current network namespace (`skiff uninstall`).
func Flush() error {
	l, err := NewLocal()
	if err != nil {
		return err
	}
	return l.Sync(nil)
}

// list returns the Gateway addresses the kernel holds, sorted.
func list() ([]netip.Addr, error) {
	var out []netip.Addr
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		rs, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_LOCAL, Protocol: Proto},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return nil, fmt.Errorf("gateway addresses: list local routes: %w", err)
		}
		for _, r := range rs {
			if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return normalize(out), nil
}

func normalize(in []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		if a.IsValid() {
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}
