package model

import (
	"cmp"
	"net/netip"
	"slices"
)

// Entry says that peers in Prefix may use Ports, except for the addresses
// of a longer Entry inside it: the entries of a direction are read by
// longest-prefix match, as the kernel's LPM trie does. An entry with an
// empty set is a hole: an except, or a pod the wider rule does not cover.
type Entry struct {
	Prefix netip.Prefix
	Ports  PortSet
}

// block is an ipBlock: CIDR minus its excepts.
type block struct {
	cidr    netip.Prefix
	excepts []netip.Prefix
}

// contains reports whether every address of p is in the block. p is a
// boundary prefix, so it is nested in or disjoint from each CIDR and except.
func (b *block) contains(p netip.Prefix) bool {
	if !covers(b.cidr, p) {
		return false
	}
	for _, e := range b.excepts {
		if covers(e, p) {
			return false
		}
	}
	return true
}

// covers reports whether outer holds all of inner.
func covers(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// grant is one peer of one rule with the ports it may use: either a block
// of addresses or one pod. Ports of an egress rule naming ports by name
// depend on the destination pod; for a block they are resolved per address
// (resolve is then set), so a pod inside the block gets its own entry.
type grant struct {
	block   *block
	pod     netip.Addr
	ports   PortSet
	resolve func(dst netip.Addr) PortSet
}

// flatten turns the grants of one direction of one pod into disjoint
// longest-prefix-match entries: every CIDR, except and pod address is a
// boundary, and each boundary gets the union of the ports of the grants
// that hold it. Entries equal to the nearest shorter one are dropped, so
// a pod inside an allowed block costs nothing.
func flatten(grants []grant, podIPs []netip.Addr) []Entry {
	if !slices.ContainsFunc(grants, func(g grant) bool { return g.block != nil }) {
		return flattenPods(grants)
	}
	return flattenPrefixes(grants, podIPs)
}

// flattenPrefixes is flatten in general: blocks, excepts and pods.
func flattenPrefixes(grants []grant, podIPs []netip.Addr) []Entry {
	bounds := map[netip.Prefix]bool{}
	byPod := map[netip.Addr][]*grant{}
	var blocks []*grant
	for i := range grants {
		g := &grants[i]
		if g.block == nil {
			bounds[netip.PrefixFrom(g.pod, 32)] = true
			byPod[g.pod] = append(byPod[g.pod], g)
			continue
		}
		blocks = append(blocks, g)
		bounds[g.block.cidr] = true
		for _, e := range g.block.excepts {
			bounds[e] = true
		}
		if g.resolve != nil {
			for _, ip := range podIPs {
				if g.block.cidr.Contains(ip) {
					bounds[netip.PrefixFrom(ip, 32)] = true
				}
			}
		}
	}
	sets := make(map[netip.Prefix]PortSet, len(bounds))
	for p := range bounds {
		var s PortSet
		for _, g := range blocks {
			if !g.block.contains(p) {
				continue
			}
			if g.resolve != nil && p.Bits() == 32 {
				s = s.Union(g.resolve(p.Addr()))
			} else {
				s = s.Union(g.ports)
			}
		}
		if p.Bits() == 32 {
			for _, g := range byPod[p.Addr()] {
				s = s.Union(g.ports)
			}
		}
		sets[p] = s
	}
	return compress(sets)
}

// flattenPods is flatten for grants of single pods only (selector peers,
// the usual case): disjoint /32s, no holes.
func flattenPods(grants []grant) []Entry {
	sets := make(map[netip.Addr]PortSet, len(grants))
	for _, g := range grants {
		sets[g.pod] = sets[g.pod].Union(g.ports)
	}
	out := make([]Entry, 0, len(sets))
	for ip, s := range sets {
		if !s.Empty() {
			out = append(out, Entry{Prefix: netip.PrefixFrom(ip, 32), Ports: s})
		}
	}
	// By the IPv4 address as a number: Addr.Compare is general and, with
	// a pod's hundreds of entries re-sorted on every change, costly.
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(addrNum(a.Prefix.Addr()), addrNum(b.Prefix.Addr())) })
	return out
}

// compress keeps the entries that differ from what the nearest shorter
// kept entry (or, above all of them, nothing) already says.
func compress(sets map[netip.Prefix]PortSet) []Entry {
	order := make([]netip.Prefix, 0, len(sets))
	for p := range sets {
		order = append(order, p)
	}
	slices.SortFunc(order, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	kept := map[netip.Prefix]PortSet{}
	var lengths []int // of kept prefixes, ascending: where a parent can be
	for _, p := range order {
		var parent PortSet
		for i := len(lengths) - 1; i >= 0; i-- {
			if lengths[i] >= p.Bits() {
				continue
			}
			if s, ok := kept[netip.PrefixFrom(p.Addr(), lengths[i]).Masked()]; ok {
				parent = s
				break
			}
		}
		if !sets[p].Equal(parent) {
			kept[p] = sets[p]
			if n := len(lengths); n == 0 || lengths[n-1] != p.Bits() {
				lengths = append(lengths, p.Bits())
			}
		}
	}
	out := make([]Entry, 0, len(kept))
	for p, s := range kept {
		out = append(out, Entry{Prefix: p, Ports: s})
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out
}

// lookup is the longest-prefix match over entries: the ports peer may use.
func lookup(entries []Entry, peer netip.Addr) PortSet {
	best := -1
	var out PortSet
	for _, e := range entries {
		if e.Prefix.Contains(peer) && e.Prefix.Bits() > best {
			best, out = e.Prefix.Bits(), e.Ports
		}
	}
	return out
}

func addrNum(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
