// Package lbmap keeps the service load balancer's BPF maps equal to the
// model: it remembers what the maps hold, writes only the difference for a
// Service that changed, and orders writes so the programs never read a
// half-written frontend.
package lbmap

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/proxy/model"
)

// Snapshot is the content of the maps userspace writes.
type Snapshot struct {
	Services map[bpf.ServiceKey]bpf.Service
	Slots    map[bpf.SlotKey]uint32
	Backends map[uint32]bpf.Backend
	RevNat   map[uint32]bpf.Frontend
}

func newSnapshot() Snapshot {
	return Snapshot{
		Services: map[bpf.ServiceKey]bpf.Service{},
		Slots:    map[bpf.SlotKey]uint32{},
		Backends: map[uint32]bpf.Backend{},
		RevNat:   map[uint32]bpf.Frontend{},
	}
}

// Read reads the maps, for a restart to pick up where the last run left off
// and for `skiff agent services` to show what the kernel holds.
func Read(m *bpf.Maps) (Snapshot, error) {
	s := newSnapshot()
	if err := readMap(m.Services, s.Services); err != nil {
		return s, fmt.Errorf("read services map: %w", err)
	}
	if err := readMap(m.Slots, s.Slots); err != nil {
		return s, fmt.Errorf("read slots map: %w", err)
	}
	if err := readMap(m.Backends, s.Backends); err != nil {
		return s, fmt.Errorf("read backends map: %w", err)
	}
	if err := readMap(m.RevNat, s.RevNat); err != nil {
		return s, fmt.Errorf("read revnat map: %w", err)
	}
	return s, nil
}

func readMap[K comparable, V any](m *ebpf.Map, into map[K]V) error {
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		into[k] = v
	}
	return it.Err()
}

// Entry is one frontend as the maps hold it.
type Entry struct {
	Key      model.Key
	ID       uint32
	Flags    uint16
	Timeout  uint32
	Backends []netip.AddrPort // in slot order
}

// Entries lists the frontends of a snapshot, sorted by address, port,
// protocol and scope.
func (s Snapshot) Entries() []Entry {
	var out []Entry
	for k, v := range s.Services {
		e := Entry{Key: decodeKey(k), ID: v.Id, Flags: v.Flags, Timeout: v.AffinityTimeout}
		for slot := uint32(1); slot <= uint32(v.Count); slot++ {
			b, ok := s.Backends[s.Slots[bpf.SlotKey{Id: v.Id, Slot: slot}]]
			if !ok {
				e.Backends = append(e.Backends, netip.AddrPort{})
				continue
			}
			e.Backends = append(e.Backends, netip.AddrPortFrom(bpf.DecodeAddr4(b.Addr), bpf.DecodePort(b.Port)))
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return compareKeys(a.Key, b.Key) })
	return out
}

// Print writes the entries as a table, like `cilium-dbg service list`.
func Print(w io.Writer, entries []Entry) {
	fmt.Fprintf(w, "%-6s %-28s %-9s %-22s %s\n", "ID", "FRONTEND", "SCOPE", "FLAGS", "BACKENDS")
	for _, e := range entries {
		var flags []string
		if e.Flags&bpf.FlagAffinity != 0 {
			flags = append(flags, fmt.Sprintf("affinity=%ds", e.Timeout))
		}
		if len(e.Backends) == 0 {
			if e.Flags&bpf.FlagNoLocal != 0 {
				flags = append(flags, "no-local-endpoints")
			} else {
				flags = append(flags, "no-endpoints")
			}
		}
		var bs []string
		for i, b := range e.Backends {
			bs = append(bs, fmt.Sprintf("%d=%s", i+1, b))
		}
		fe := fmt.Sprintf("%s/%s", netip.AddrPortFrom(e.Key.Addr, e.Key.Port), e.Key.Proto)
		fmt.Fprintf(w, "%-6d %-28s %-9s %-22s %s\n", e.ID, fe, e.Key.Scope, cmp.Or(strings.Join(flags, ","), "-"), strings.Join(bs, " "))
	}
}

func encodeKey(k model.Key) bpf.ServiceKey {
	return bpf.ServiceKey{Addr: bpf.Addr4(k.Addr), Port: bpf.Port(k.Port), Proto: uint8(k.Proto), Scope: uint8(k.Scope)}
}

func decodeKey(k bpf.ServiceKey) model.Key {
	return model.Key{Addr: bpf.DecodeAddr4(k.Addr), Port: bpf.DecodePort(k.Port), Proto: model.Proto(k.Proto), Scope: model.Scope(k.Scope)}
}

func compareKeys(a, b model.Key) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Scope, b.Scope))
}
