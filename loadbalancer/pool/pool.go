// Package pool is the load balancer's address allocator as a pure
// function: from pools, LoadBalancer Services and the cluster's reserved
// ranges and nodes, it decides which addresses each Service gets and why a
// Service stays pending. It has no API server and no kernel, so every rule
// (no duplicate address, ever) is unit-tested; loadbalancer/controller
// feeds it from informers and writes the result.
package pool

import (
	"fmt"
	"math/big"
	"net/netip"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiffnet/skiff/loadbalancer/api"
)

// Range is an inclusive run of IPv4 addresses.
type Range struct{ First, Last netip.Addr }

// Contains reports whether a is in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

// Size is the number of addresses in r.
func (r Range) Size() int64 { return u32(r.Last) - u32(r.First) + 1 }

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

func u32(a netip.Addr) int64 {
	b := a.As4()
	return int64(b[0])<<24 | int64(b[1])<<16 | int64(b[2])<<8 | int64(b[3])
}

// prefixRange is the range a prefix covers.
func prefixRange(p netip.Prefix) Range {
	p = p.Masked()
	last := new(big.Int).SetBytes(p.Addr().AsSlice())
	last.Or(last, new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits())), big.NewInt(1)))
	b := last.FillBytes(make([]byte, p.Addr().BitLen()/8))
	end, _ := netip.AddrFromSlice(b)
	return Range{First: p.Addr(), Last: end}
}

// Pool is a LoadBalancerPool as the allocator sees it.
type Pool struct {
	Name     string
	Created  time.Time
	Ranges   []Range
	Selector labels.Selector // never nil after Parse
	Disabled bool
	// ForServices and ForGateways are spec.serves.
	ForServices, ForGateways bool
	// Err is why the spec is unusable (a field and its fix); such a pool
	// hands out nothing.
	Err error
}

// Parse turns a LoadBalancerPool into a Pool. A bad spec still gives a
// Pool, with Err set, so the allocator can report it on the object.
func Parse(p *api.Pool) Pool {
	out := Pool{Name: p.Name, Created: p.CreationTimestamp.Time, Disabled: p.Spec.Disabled, Selector: labels.Everything()}
	out.ForServices = len(p.Spec.Serves) == 0
	for i, v := range p.Spec.Serves {
		switch v {
		case api.ServesServices:
			out.ForServices = true
		case api.ServesGateways:
			out.ForGateways = true
		default:
			out.ForServices = true // still counts as a Services pool for node-address mode
			out.Err = fmt.Errorf("spec.serves[%d]: %q is neither %s nor %s", i, v, api.ServesServices, api.ServesGateways)
			return out
		}
	}
	if p.Spec.ServiceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.ServiceSelector)
		if err != nil {
			out.Err = fmt.Errorf("spec.serviceSelector: %w", err)
			return out
		}
		out.Selector = sel
	}
	if len(p.Spec.Blocks) == 0 {
		out.Err = fmt.Errorf("spec.blocks is empty: add a block such as {cidr: 192.168.1.240/28} or {start: 192.168.1.240, stop: 192.168.1.250}")
		return out
	}
	for i, b := range p.Spec.Blocks {
		r, err := parseBlock(b)
		if err != nil {
			out.Err = fmt.Errorf("spec.blocks[%d]: %w", i, err)
			return out
		}
		for j, o := range out.Ranges {
			if r.Overlaps(o) {
				out.Err = fmt.Errorf("spec.blocks[%d] (%s) overlaps spec.blocks[%d] (%s): list each address once", i, r, j, o)
				return out
			}
		}
		out.Ranges = append(out.Ranges, r)
	}
	// Lowest first: allocation walks them in order.
	sort.Slice(out.Ranges, func(i, j int) bool { return out.Ranges[i].First.Less(out.Ranges[j].First) })
	return out
}

const ipv6Refused = "IPv6 pools are not supported until Skiff is dual-stack: use IPv4 addresses"

func parseBlock(b api.Block) (Range, error) {
	switch {
	case b.CIDR != "" && (b.Start != "" || b.Stop != ""):
		return Range{}, fmt.Errorf("set either cidr or start and stop, not both")
	case b.CIDR != "":
		p, err := netip.ParsePrefix(b.CIDR)
		if err != nil {
			return Range{}, fmt.Errorf("cidr %q is not a CIDR: write it like 192.168.1.240/28", b.CIDR)
		}
		if !p.Addr().Is4() {
			return Range{}, fmt.Errorf("cidr %s: %s", p, ipv6Refused)
		}
		if p.Masked() != p {
			return Range{}, fmt.Errorf("cidr %s has host bits set: did you mean %s?", p, p.Masked())
		}
		r := prefixRange(p)
		// Hosts on a subnet treat an IPv4 network's first and last
		// addresses specially; leave them out of blocks larger than /31.
		if p.Bits() < 31 {
			r.First, r.Last = r.First.Next(), r.Last.Prev()
		}
		return r, nil
	case b.Start != "" || b.Stop != "":
		first, err1 := netip.ParseAddr(b.Start)
		last, err2 := netip.ParseAddr(b.Stop)
		if err1 != nil || err2 != nil {
			return Range{}, fmt.Errorf("start %q and stop %q must both be IP addresses, such as 192.168.1.240 and 192.168.1.250", b.Start, b.Stop)
		}
		if !first.Is4() || !last.Is4() {
			return Range{}, fmt.Errorf("start %s, stop %s: %s", first, last, ipv6Refused)
		}
		if last.Less(first) {
			return Range{}, fmt.Errorf("stop %s comes before start %s: swap them", last, first)
		}
		return Range{First: first, Last: last}, nil
	}
	return Range{}, fmt.Errorf("empty block: set cidr, or start and stop")
}

// Size is the number of addresses the pool holds.
func (p Pool) Size() int64 {
	var n int64
	for _, r := range p.Ranges {
		n += r.Size()
	}
	return n
}

// Contains reports whether a is one of the pool's addresses.
func (p Pool) Contains(a netip.Addr) bool {
	for _, r := range p.Ranges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// Reserved is a range no pool may overlap, named for the error message.
type Reserved struct {
	Name   string // e.g. "--service-cidr"
	Prefix netip.Prefix
}

// Node is one node as node-address mode and the overlap checks see it.
type Node struct {
	Name  string
	Addr  netip.Addr
	Ready bool
	// Ports are taken on the node by pods' hostPorts.
	Ports []Port
}

// CheckReserved says why p overlaps one of the cluster's reserved ranges,
// or returns nil: `skiff server` checks --lb-pool and --gateway-cidr with
// it at start.
func CheckReserved(p Pool, reserved []Reserved) error {
	return checkPool(p, nil, reserved, nil)
}

// validate sets Err on pools that overlap a reserved range, hold a node's
// address, or overlap an older pool (the older one keeps its addresses).
func validate(pools []Pool, reserved []Reserved, nodes []Node) []Pool {
	pools = append([]Pool(nil), pools...)
	sort.SliceStable(pools, func(i, j int) bool { return older(pools[i].Created, pools[i].Name, pools[j].Created, pools[j].Name) })
	for i := range pools {
		p := &pools[i]
		if p.Err != nil {
			continue
		}
		p.Err = checkPool(*p, pools[:i], reserved, nodes)
	}
	return pools
}

func checkPool(p Pool, olderPools []Pool, reserved []Reserved, nodes []Node) error {
	for _, r := range p.Ranges {
		for _, res := range reserved {
			if res.Prefix.Addr().Is4() && r.Overlaps(prefixRange(res.Prefix)) {
				return fmt.Errorf("spec.blocks: %s overlaps the cluster's %s %s: pick addresses outside it", r, res.Name, res.Prefix)
			}
		}
		for _, n := range nodes {
			if r.Contains(n.Addr) {
				return fmt.Errorf("spec.blocks: %s holds node %s's address %s: leave the nodes' addresses out", r, n.Name, n.Addr)
			}
		}
		for _, o := range olderPools {
			if o.Err != nil {
				continue
			}
			for _, or := range o.Ranges {
				if r.Overlaps(or) {
					return fmt.Errorf("spec.blocks: %s overlaps %s of the older pool %s: an address belongs to one pool", r, or, o.Name)
				}
			}
		}
	}
	return nil
}

func older(a time.Time, an string, b time.Time, bn string) bool {
	if !a.Equal(b) {
		return a.Before(b)
	}
	return an < bn
}
