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
	// resynced is false until the first Apply has rewritten every pod and
	// removed what a previous run left.
	resynced bool
}

type applied struct {
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
	if !w.resynced {
		if err := w.adoptKernelState(); err != nil {
			return err
		}
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
		w.applied[bpf.DecodeAddr4(ip)] = &applied{flags: ^uint32(0), gen: ep.Gen}
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
	want := &applied{flags: flagsOf(ep)}
	if ep.IngressIsolated {
		want.entries[bpf.PolicyIngress] = ep.Ingress
	}
	if ep.EgressIsolated {
		want.entries[bpf.PolicyEgress] = ep.Egress
	}
	old := w.applied[ip]
	if old != nil && old.flags == want.flags && sameEntries(old.entries, want.entries) {
		return nil
	}
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
	if old != nil {
		return w.deleteEntries(ip, old)
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
			return x.Prefix == y.Prefix && x.Ports.Key() == y.Ports.Key()
		}) {
			return false
		}
	}
	return true
}
