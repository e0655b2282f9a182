package policymap

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/netpol/model"
)

// acquire returns the id of set, writing it when it is new.
func (w *Writer) acquire(set model.PortSet) (uint32, error) {
	key := set.Key()
	if s := w.sets[key]; s != nil {
		s.refs++
		return s.id, nil
	}
	id := w.nextID
	for w.usedIDs[id] || id == 0 {
		id++
	}
	w.nextID = id + 1
	for _, k := range portKeys(id, set) {
		if err := w.p.Ports.Put(k, uint32(1)); err != nil {
			return 0, fmt.Errorf("write pol_ports set %s: %w", key, err)
		}
	}
	w.usedIDs[id] = true
	w.sets[key] = &portSet{id: id, refs: 1, set: set}
	return id, nil
}

// release drops a reference to set, deleting it with the last one.
func (w *Writer) release(set model.PortSet) error {
	key := set.Key()
	s := w.sets[key]
	if s == nil {
		return nil
	}
	if s.refs--; s.refs > 0 {
		return nil
	}
	delete(w.sets, key)
	delete(w.usedIDs, s.id)
	for _, k := range portKeys(s.id, s.set) {
		if err := w.p.Ports.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete pol_ports set %s: %w", key, err)
		}
	}
	return nil
}

// portKeys are the LPM entries of a set: each range split into aligned
// power-of-two blocks, at most 30 per range.
func portKeys(id uint32, set model.PortSet) []bpf.PolicyPortKey {
	var out []bpf.PolicyPortKey
	for _, r := range set.Ranges {
		lo, hi := uint32(r.First), uint32(r.Last)
		for lo <= hi {
			// The largest block starting at lo that fits in [lo, hi].
			size := uint32(1) << 16
			if lo != 0 {
				size = uint32(1) << bits.TrailingZeros32(lo)
			}
			for size > hi-lo+1 {
				size >>= 1
			}
			plen := 16 - bits.TrailingZeros32(size)
			out = append(out, bpf.PolicyPortKey{
				Prefixlen: uint32(bpf.PolicyPortPrefixBase + plen),
				SetId:     id, Proto: r.Proto, Port: bpf.Port(uint16(lo)),
			})
			lo += size
		}
	}
	return out
}

// removeLeftovers deletes what a previous run left: rule entries of
// generations no pod uses, and port sets this run did not write.
func (w *Writer) removeLeftovers() error {
	var stale []bpf.PolicyRuleKey
	var k bpf.PolicyRuleKey
	var v bpf.PolicyRule
	it := w.p.Rules.Iterate()
	for it.Next(&k, &v) {
		a := w.applied[bpf.DecodeAddr4(k.Pod)]
		if a == nil || a.gen != k.Gen {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read pol_rules: %w", err)
	}
	for _, k := range stale {
		if err := w.p.Rules.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from pol_rules: %w", err)
		}
	}
	ours := map[uint32]bool{}
	for _, s := range w.sets {
		ours[s.id] = true
	}
	var stalePorts []bpf.PolicyPortKey
	var pk bpf.PolicyPortKey
	var one uint32
	pit := w.p.Ports.Iterate()
	for pit.Next(&pk, &one) {
		if !ours[pk.SetId] {
			stalePorts = append(stalePorts, pk)
		}
	}
	if err := pit.Err(); err != nil {
		return fmt.Errorf("read pol_ports: %w", err)
	}
	for _, k := range stalePorts {
		if err := w.p.Ports.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from pol_ports: %w", err)
		}
		delete(w.usedIDs, k.SetId)
	}
	return nil
}
