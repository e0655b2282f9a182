// Package policymap writes what netpol/model computes into the policy
// programs' BPF maps (bpf/policy.c), changing only pods whose rules
// changed. A pod's entries are replaced at once: the new generation's
// entries are written beside the old, the pod's endpoint entry is flipped
// to the new generation, then the old entries go. Port sets are shared by
// content and written before any entry refers to them.
package policymap

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/netpol/model"
)

// Writer keeps the maps in line with the desired endpoints. It is not safe
// for concurrent use.
type Writer struct {
	p       *bpf.Policy
	applied map[netip.Addr]*applied
	sets    map[string]*portSet
	usedIDs map[uint32]bool // set ids in the kernel, ours or a previous run's
	nextID  uint32
	adopted bool // the previous run's pods are known
	// resynced is false until the first Apply has rewritten every pod and
	// removed what a previous run left.
	resynced bool
}

type applied struct {
	adopted bool // written by a previous run: entries unknown
	// src is the model's endpoint written last: the model never modifies
	// an endpoint it returned, so the same one again means no change.
	src     *model.Endpoint
	flags   uint32
	gen     uint8
	entries [2][]model.Entry // by direction (bpf.PolicyIngress, bpf.PolicyEgress)
}

type portSet struct {
	id   uint32
	refs int
	set  model.PortSet
}

// New returns a writer over p's maps. The first Apply replaces whatever a
// previous run left in them without a moment of lesser enforcement.
func New(p *bpf.Policy) (*Writer, error) {
	w := &Writer{p: p, applied: map[netip.Addr]*applied{}, sets: map[string]*portSet{}, usedIDs: map[uint32]bool{}, nextID: 1}
	var k bpf.PolicyPortKey
	var v uint32
	it := p.Ports.Iterate()
	for it.Next(&k, &v) {
		w.usedIDs[k.SetId] = true
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read pol_ports: %w", err)
	}
	return w, nil
}

// Apply makes the maps hold exactly the isolated pods of eps.
func (w *Writer) Apply(eps map[netip.Addr]*model.Endpoint) error {
	if !w.adopted {
		if err := w.adoptKernelState(); err != nil {
			return err
		}
		w.adopted = true
	}
	var errs []error
	for ip, ep := range eps {
		if !ep.IngressIsolated && !ep.EgressIsolated {
			continue
		}
		if err := w.applyEndpoint(ip, ep); err != nil {
			errs = append(errs, fmt.Errorf("pod %s (%s): %w", ep.Pod, ip, err))
		}
	}
	for ip := range w.applied {
		if ep := eps[ip]; ep == nil || (!ep.IngressIsolated && !ep.EgressIsolated) {
			if err := w.removeEndpoint(ip); err != nil {
				errs = append(errs, fmt.Errorf("pod %s: %w", ip, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !w.resynced {
		if err := w.removeLeftovers(); err != nil {
			return err
		}
		w.resynced = true
	}
	return nil
}

// adoptKernelState learns the generations a previous run left, so this
// run writes the other one, and counts their pods as applied with unknown
// content (nothing compares equal to it, so every pod is rewritten).
func (w *Writer) adoptKernelState() error {
	var ip uint32
	var ep bpf.PolicyEndpoint
	it := w.p.Endpoints.Iterate()
	for it.Next(&ip, &ep) {
		w.applied[bpf.DecodeAddr4(ip)] = &applied{adopted: true, flags: ep.Flags, gen: ep.Gen}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read pol_endpoints: %w", err)
	}
	return nil
}

func flagsOf(ep *model.Endpoint) uint32 {
	var f uint32
	if ep.IngressIsolated {
		f |= bpf.PolicyIsolateIngress
	}
	if ep.EgressIsolated {
		f |= bpf.PolicyIsolateEgress
	}
	return f
}

func (w *Writer) applyEndpoint(ip netip.Addr, ep *model.Endpoint) error {
	if old := w.applied[ip]; old != nil && !old.adopted && old.src == ep {
		return nil
	}
	want := &applied{flags: flagsOf(ep), src: ep}
	if ep.IngressIsolated {
		want.entries[bpf.PolicyIngress] = ep.Ingress
	}
	if ep.EgressIsolated {
		want.entries[bpf.PolicyEgress] = ep.Egress
	}
	old := w.applied[ip]
	if old != nil && !old.adopted && old.flags == want.flags && sameEntries(old.entries, want.entries) {
		old.src = ep
		return nil
	}
	if old == nil || old.adopted {
		return w.replaceEndpoint(ip, old, want)
	}
	return w.updateEndpoint(ip, old, want)
}

// replaceEndpoint writes a pod's entries under a new generation and flips
// the pod to it: a new pod, or one a previous run wrote (whose entries
// this run does not know; removeLeftovers deletes them).
func (w *Writer) replaceEndpoint(ip netip.Addr, old, want *applied) error {
	if old != nil {
		want.gen = old.gen + 1
	}
	for dir, entries := range want.entries {
		for _, e := range entries {
			if err := w.putEntry(ip, uint8(dir), want.gen, e); err != nil {
				return err
			}
		}
	}
	if old == nil {
		if err := w.resetCounters(ip); err != nil {
			return err
		}
	}
	if err := w.p.Endpoints.Put(bpf.Addr4(ip), bpf.PolicyEndpoint{Flags: want.flags, Gen: want.gen}); err != nil {
		return fmt.Errorf("write pol_endpoints: %w", err)
	}
	w.applied[ip] = want
	return nil
}

// updateEndpoint changes what differs in place: new and changed entries
// first, then the isolation flags, then removed entries. Each write is
// atomic; a change of several entries is briefly a mix of old and new, as
// with Cilium's incremental policy map updates. The usual change, a pod
// joining or leaving a selector, is one entry.
func (w *Writer) updateEndpoint(ip netip.Addr, old, want *applied) error {
	want.gen = old.gen
	type removed struct {
		dir   uint8
		entry model.Entry
	}
	var gone []removed
	var release []model.PortSet
	for dir := range want.entries {
		before := map[netip.Prefix]model.PortSet{}
		for _, e := range old.entries[dir] {
			before[e.Prefix] = e.Ports
		}
		for _, e := range want.entries[dir] {
			prev, ok := before[e.Prefix]
			delete(before, e.Prefix)
			if ok && prev.Equal(e.Ports) {
				continue
			}
			if err := w.putEntry(ip, uint8(dir), want.gen, e); err != nil {
				return err
			}
			if ok {
				release = append(release, prev)
			}
		}
		for p, ports := range before {
			gone = append(gone, removed{uint8(dir), model.Entry{Prefix: p, Ports: ports}})
		}
	}
	if old.flags != want.flags {
		if err := w.p.Endpoints.Put(bpf.Addr4(ip), bpf.PolicyEndpoint{Flags: want.flags, Gen: want.gen}); err != nil {
			return fmt.Errorf("write pol_endpoints: %w", err)
		}
	}
	w.applied[ip] = want
	for _, r := range gone {
		if err := w.p.Rules.Delete(ruleKey(ip, r.dir, want.gen, r.entry.Prefix)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from pol_rules: %w", err)
		}
		release = append(release, r.entry.Ports)
	}
	for _, s := range release {
		if !s.Any && !s.Empty() {
			if err := w.release(s); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *Writer) removeEndpoint(ip netip.Addr) error {
	old := w.applied[ip]
	if err := w.p.Endpoints.Delete(bpf.Addr4(ip)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete from pol_endpoints: %w", err)
	}
	delete(w.applied, ip)
	for _, dir := range []uint8{bpf.PolicyIngress, bpf.PolicyEgress} {
		w.p.EPStats.Delete(bpf.PolicyEPKey{Pod: bpf.Addr4(ip), Dir: uint32(dir)})
	}
	return w.deleteEntries(ip, old)
}

func (w *Writer) resetCounters(ip netip.Addr) error {
	zero := make([]bpf.PolicyEPCounters, ebpf.MustPossibleCPU())
	for _, dir := range []uint8{bpf.PolicyIngress, bpf.PolicyEgress} {
		if err := w.p.EPStats.Put(bpf.PolicyEPKey{Pod: bpf.Addr4(ip), Dir: uint32(dir)}, zero); err != nil {
			return fmt.Errorf("write pol_ep_stats: %w", err)
		}
	}
	return nil
}

func (w *Writer) deleteEntries(ip netip.Addr, a *applied) error {
	for dir, entries := range a.entries {
		for _, e := range entries {
			k := ruleKey(ip, uint8(dir), a.gen, e.Prefix)
			if err := w.p.Rules.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("delete from pol_rules: %w", err)
			}
			if !e.Ports.Any && !e.Ports.Empty() {
				if err := w.release(e.Ports); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (w *Writer) putEntry(ip netip.Addr, dir, gen uint8, e model.Entry) error {
	var v bpf.PolicyRule
	switch {
	case e.Ports.Any:
		v.Flags = bpf.PolicyRuleAny
	case !e.Ports.Empty():
		id, err := w.acquire(e.Ports)
		if err != nil {
			return err
		}
		v.SetId = id
	}
	if err := w.p.Rules.Put(ruleKey(ip, dir, gen, e.Prefix), v); err != nil {
		return fmt.Errorf("write pol_rules entry %s: %w", e.Prefix, err)
	}
	return nil
}

func ruleKey(pod netip.Addr, dir, gen uint8, peer netip.Prefix) bpf.PolicyRuleKey {
	return bpf.PolicyRuleKey{
		Prefixlen: uint32(bpf.PolicyRulePrefixBase + peer.Bits()),
		Pod:       bpf.Addr4(pod), Dir: dir, Gen: gen, Peer: bpf.Addr4(peer.Addr()),
	}
}

func sameEntries(a, b [2][]model.Entry) bool {
	for i := range a {
		if !slices.EqualFunc(a[i], b[i], func(x, y model.Entry) bool {
			return x.Prefix == y.Prefix && x.Ports.Equal(y.Ports)
		}) {
			return false
		}
	}
	return true
}
