package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultInterface is the dummy interface that holds the addresses cluster
// DNS is served on when they are not on the node already.
const DefaultInterface = "skiff-dns"

// Dummy is a dummy interface in the current network namespace holding
// addresses a server binds to, such as the kube-dns ClusterIP: a socket can
// only bind an address the kernel considers local, and a dummy interface
// makes it local without routing anything anywhere. On kernels built
// without the dummy driver (CONFIG_DUMMY) it is a bridge with no ports,
// which does the same: nothing is ever sent on it.
type Dummy struct {
	link  netlink.Link
	addrs []netip.Addr
}

// AddDummy creates (or adopts, after a crash) the dummy interface name, sets
// it up and adds addrs to it as host addresses (/32, /128). The interface
// belongs to the caller: Close deletes it.
func AddDummy(name string, addrs ...netip.Addr) (*Dummy, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("dns: dummy interface name %q: want 1 to %d characters", name, unix.IFNAMSIZ-1)
	}
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		if link, err = createDummy(name); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("dns: find interface %s: %w", name, err)
	default:
		if err := adoptable(link); err != nil {
			return nil, err
		}
	}
	d := &Dummy{link: link}
	for _, ip := range addrs {
		ip = ip.Unmap()
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}}
		if ip.Is6() {
			// Without NODAD the address is "tentative" for a second or two
			// and bind fails with EADDRNOTAVAIL.
			a.Flags = unix.IFA_F_NODAD
		}
		// Replace, not add: an address left behind by a crash is fine.
		if err := netlink.AddrReplace(link, a); err != nil {
			d.Close()
			return nil, fmt.Errorf("dns: add %s to %s: %w", ip, name, err)
		}
		d.addrs = append(d.addrs, ip)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		d.Close()
		return nil, fmt.Errorf("dns: set %s up: %w", name, err)
	}
	return d, nil
}

// Name is the interface's name.
func (d *Dummy) Name() string { return d.link.Attrs().Name }

// Addrs are the addresses added.
func (d *Dummy) Addrs() []netip.Addr { return d.addrs }

// Close deletes the interface and with it its addresses.
func (d *Dummy) Close() error {
	if err := netlink.LinkDel(d.link); err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("dns: delete dummy interface %s: %w", d.Name(), err)
	}
	return nil
}

func createDummy(name string) (netlink.Link, error) {
	la := netlink.NewLinkAttrs()
	la.Name = name
	err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: la})
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la})
	}
	if err != nil {
		return nil, fmt.Errorf("dns: create dummy interface %s: %w", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("dns: find dummy interface %s: %w", name, err)
	}
	return link, nil
}

// adoptable accepts an existing interface of the name only if it is what
// AddDummy would have created, so a wrong name cannot delete a real one.
func adoptable(link netlink.Link) error {
	name := link.Attrs().Name
	switch link.Type() {
	case "dummy":
		return nil
	case "bridge":
		all, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("dns: list interfaces: %w", err)
		}
		for _, l := range all {
			if l.Attrs().MasterIndex == link.Attrs().Index {
				return fmt.Errorf("dns: interface %s is a bridge with ports (%s): refusing to take it over", name, l.Attrs().Name)
			}
		}
		return nil
	}
	return fmt.Errorf("dns: interface %s exists and is a %s, not a dummy: refusing to take it over", name, link.Type())
}

// local reports whether ip is an address of some interface in the current
// network namespace, so a socket can bind it.
func local(ip netip.Addr) (bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, fmt.Errorf("dns: list local addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if have, ok := netip.AddrFromSlice(n.IP); ok && have.Unmap() == ip.Unmap() {
				return true, nil
			}
		}
	}
	return false, nil
}
