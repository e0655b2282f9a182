package model

import (
	"fmt"
	"slices"
	"strings"
)

// IP protocol numbers of the protocols NetworkPolicy ports name.
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// PortRange is a protocol and an inclusive range of destination ports.
// First 0 and Last 65535 is every port of the protocol.
type PortRange struct {
	Proto       uint8
	First, Last uint16
}

func (r PortRange) String() string {
	name := map[uint8]string{ProtoTCP: "tcp", ProtoUDP: "udp", ProtoSCTP: "sctp"}[r.Proto]
	if name == "" {
		name = fmt.Sprint(r.Proto)
	}
	switch {
	case r.First == 0 && r.Last == 65535:
		return name
	case r.First == r.Last:
		return fmt.Sprintf("%s/%d", name, r.First)
	}
	return fmt.Sprintf("%s/%d-%d", name, r.First, r.Last)
}

// PortSet is what a peer may use: every protocol and port (Any), or a set
// of port ranges kept sorted and merged, so equal sets compare equal and
// share one id in the kernel's maps.
type PortSet struct {
	Any    bool
	Ranges []PortRange
}

// AnyPort is the set of a rule without ports: all traffic.
var AnyPort = PortSet{Any: true}

// Empty reports whether the set allows nothing.
func (s PortSet) Empty() bool { return !s.Any && len(s.Ranges) == 0 }

// Key is a canonical rendering: equal sets have equal keys.
func (s PortSet) Key() string {
	if s.Any {
		return "any"
	}
	if len(s.Ranges) == 0 {
		return "none"
	}
	parts := make([]string, len(s.Ranges))
	for i, r := range s.Ranges {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

func (s PortSet) String() string { return s.Key() }

// Equal reports whether s and o allow the same (both canonical).
func (s PortSet) Equal(o PortSet) bool {
	return s.Any == o.Any && slices.Equal(s.Ranges, o.Ranges)
}

// Union returns s ∪ o in canonical form.
func (s PortSet) Union(o PortSet) PortSet {
	if s.Any || o.Any {
		return AnyPort
	}
	return PortSet{Ranges: normalize(append(slices.Clone(s.Ranges), o.Ranges...))}
}

// Intersect returns s ∩ o in canonical form.
func (s PortSet) Intersect(o PortSet) PortSet {
	switch {
	case s.Any:
		return PortSet{Any: o.Any, Ranges: slices.Clone(o.Ranges)}
	case o.Any:
		return PortSet{Ranges: slices.Clone(s.Ranges)}
	}
	var out []PortRange
	for _, a := range s.Ranges {
		for _, b := range o.Ranges {
			if a.Proto != b.Proto {
				continue
			}
			lo, hi := max(a.First, b.First), min(a.Last, b.Last)
			if lo <= hi {
				out = append(out, PortRange{a.Proto, lo, hi})
			}
		}
	}
	return PortSet{Ranges: normalize(out)}
}

// Contains reports whether the set allows proto to port.
func (s PortSet) Contains(proto uint8, port uint16) bool {
	if s.Any {
		return true
	}
	for _, r := range s.Ranges {
		if r.Proto == proto && r.First <= port && port <= r.Last {
			return true
		}
	}
	return false
}

// normalize sorts ranges and merges the overlapping and adjacent ones.
func normalize(rs []PortRange) []PortRange {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b PortRange) int {
		if a.Proto != b.Proto {
			return int(a.Proto) - int(b.Proto)
		}
		return int(a.First) - int(b.First)
	})
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.Proto == last.Proto && uint32(r.First) <= uint32(last.Last)+1 {
			last.Last = max(last.Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}
