package model

import (
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// Model computes what Compute does, incrementally: each Update compares
// the new state with the previous one and recomputes only the local pods
// a change can touch (their selection, or the peers of a policy selecting
// them), so programming time follows the size of the change, not of the
// cluster. Objects are compared by identity: like the informers' objects
// they must not be modified once passed in, only replaced. Endpoints
// returned are never modified later either (a changed pod gets a new
// one), so a consumer may skip those it has seen. Not safe for concurrent
// use.
type Model struct {
	opts Options
	dns  *peerPod

	pods   map[string]*podObj                 // namespace/name → what was seen
	claims map[netip.Addr][]*peerPod          // every pod with the address
	winner map[netip.Addr]*peerPod            // the one that counts (prefer)
	byNS   map[string]map[netip.Addr]*peerPod // winners by namespace
	ipList []netip.Addr                       // winners' addresses; nil: rebuild

	namespaces map[string]*corev1.Namespace
	nsLabels   map[string]labels.Set

	policies map[string]*policyEntry            // namespace/name
	polByNS  map[string]map[string]*policyEntry // namespace → name

	eps map[netip.Addr]*Endpoint
	// Work of the current Update: local addresses to recompute, and
	// policies whose peers must be resolved again.
	dirty      map[netip.Addr]bool
	unresolved map[*policyEntry]bool
}

type podObj struct {
	obj *corev1.Pod
	pp  *peerPod // nil: no address, host network or finished
}

type policyEntry struct {
	*parsedPolicy
	resolved bool
	compiled [2][]*compiledRule
	// podDependent: some egress rule names ports over an ipBlock.
	podDependent bool
}

// NewModel returns an empty model; the first Update computes everything.
func NewModel(opts Options) *Model {
	return &Model{
		opts: opts, dns: newDNSPeer(opts.DNS),
		pods: map[string]*podObj{}, claims: map[netip.Addr][]*peerPod{}, winner: map[netip.Addr]*peerPod{},
		byNS: map[string]map[netip.Addr]*peerPod{}, namespaces: map[string]*corev1.Namespace{},
		nsLabels: map[string]labels.Set{}, policies: map[string]*policyEntry{},
		polByNS: map[string]map[string]*policyEntry{}, eps: map[netip.Addr]*Endpoint{},
		dirty: map[netip.Addr]bool{}, unresolved: map[*policyEntry]bool{},
	}
}

// Update brings the model to state s and returns the node's local pods
// and what policy allows each, as Compute(s, opts) would, with the
// problems of every faulty policy. The map is the caller's.
func (m *Model) Update(s State) (map[netip.Addr]*Endpoint, error) {
	// Namespaces, then pods, then policies: each step judges what a
	// change touches against the objects of the steps before.
	m.updateNamespaces(s.Namespaces)
	m.updatePods(s.Pods)
	m.updatePolicies(s.Policies)
	for pe := range m.unresolved {
		if m.policies[pe.key] == pe {
			m.markSelected(pe.parsedPolicy)
		}
	}
	clear(m.unresolved)
	for ip := range m.dirty {
		m.recompute(ip)
	}
	clear(m.dirty)
	var errs []error
	for _, pe := range m.policies {
		errs = append(errs, pe.errs...)
	}
	return maps.Clone(m.eps), joinSorted(errs)
}

// reconcile calls set for every object of objs that is new or not the
// one held under its key, and with a nil object for every key held that
// objs lacks. Objects are compared by identity: they are replaced, never
// modified.
func reconcile[T any, H comparable](objs []*T, key func(*T) string, held map[string]H, obj func(H) *T, set func(key string, old H, o *T)) {
	seen := make(map[string]bool, len(objs))
	for _, o := range objs {
		k := key(o)
		seen[k] = true
		if old, ok := held[k]; !ok || obj(old) != o {
			set(k, old, o)
		}
	}
	for k, old := range held {
		if !seen[k] {
			set(k, old, nil)
		}
	}
}

func (m *Model) updateNamespaces(nss []*corev1.Namespace) {
	reconcile(nss, func(ns *corev1.Namespace) string { return ns.Name }, m.namespaces,
		func(ns *corev1.Namespace) *corev1.Namespace { return ns },
		func(name string, _ *corev1.Namespace, ns *corev1.Namespace) {
			before := m.namespaceLabels(name)
			if ns == nil {
				delete(m.namespaces, name)
				delete(m.nsLabels, name)
			} else {
				m.namespaces[name] = ns
				m.nsLabels[name] = labels.Set(ns.Labels)
			}
			m.namespaceChanged(before, m.namespaceLabels(name))
		})
}

// namespaceChanged unresolves the policies with a namespaceSelector peer
// that picks the namespace before or after.
func (m *Model) namespaceChanged(before, after labels.Set) {
	if labels.Equals(before, after) {
		return
	}
	for _, pe := range m.policies {
		if m.unresolved[pe] {
			continue
		}
		for _, rules := range pe.rules {
			for _, r := range rules {
				for _, s := range r.peers {
					if s.ns != nil && (s.ns.Matches(before) || s.ns.Matches(after)) {
						m.unresolve(pe)
					}
				}
			}
		}
	}
}

func (m *Model) updatePods(pods []*corev1.Pod) {
	reconcile(pods, func(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }, m.pods,
		func(o *podObj) *corev1.Pod { return o.obj }, m.setPod)
}

// setPod replaces the pod at key (p nil: deleted).
func (m *Model) setPod(key string, old *podObj, p *corev1.Pod) {
	var before, after *peerPod
	if old != nil {
		before = old.pp
	}
	if p == nil {
		delete(m.pods, key)
	} else {
		after = newPeerPod(p, m.opts.NodeName)
		if before != nil && after != nil && samePeer(before, after) {
			after = before // a status update: nothing policy sees
		}
		m.pods[key] = &podObj{obj: p, pp: after}
	}
	if before == after {
		return
	}
	if before != nil {
		m.claims[before.ip] = slices.DeleteFunc(m.claims[before.ip], func(c *peerPod) bool { return c == before })
		if len(m.claims[before.ip]) == 0 {
			delete(m.claims, before.ip)
		}
		m.elect(before.ip)
	}
	if after != nil {
		m.claims[after.ip] = append(m.claims[after.ip], after)
		m.elect(after.ip)
	}
}

// samePeer reports whether two versions of a pod look the same to policy.
func samePeer(a, b *peerPod) bool {
	return a.ip == b.ip && a.ns == b.ns && a.name == b.name && a.local == b.local && a.deleting == b.deleting &&
		labels.Equals(a.lbl, b.lbl) && slices.Equal(a.ports, b.ports)
}

// elect picks the pod at ip among those claiming it and, when it is
// another one, records what that touches.
func (m *Model) elect(ip netip.Addr) {
	var w *peerPod
	for _, c := range m.claims[ip] {
		if w == nil || prefer(c, w) {
			w = c
		}
	}
	old := m.winner[ip]
	if old == w {
		return
	}
	if old != nil {
		delete(m.byNS[old.ns], ip)
		if len(m.byNS[old.ns]) == 0 {
			delete(m.byNS, old.ns)
		}
	}
	if w == nil {
		delete(m.winner, ip)
	} else {
		m.winner[ip] = w
		if m.byNS[w.ns] == nil {
			m.byNS[w.ns] = map[netip.Addr]*peerPod{}
		}
		m.byNS[w.ns][ip] = w
	}
	m.ipList = nil
	m.peerChanged(ip, old, w)
}

// peerChanged records what a change of the pod at ip (either may be nil)
// touches: the address itself when it is a local pod's, and every policy
// with a peer selector that picks the pod before or after.
func (m *Model) peerChanged(ip netip.Addr, before, after *peerPod) {
	if (before != nil && before.local) || (after != nil && after.local) {
		m.dirty[ip] = true
	}
	for _, pe := range m.policies {
		if !m.unresolved[pe] && (pe.podDependent || m.picks(pe, before) || m.picks(pe, after)) {
			m.unresolve(pe)
		}
	}
}

// picks reports whether one of the policy's peer selectors picks pp.
func (m *Model) picks(pe *policyEntry, pp *peerPod) bool {
	if pp == nil {
		return false
	}
	nsl := m.namespaceLabels(pp.ns)
	for dir, rules := range pe.rules {
		for _, r := range rules {
			for _, s := range r.peers {
				if s.matches(pp, pe.pol.Namespace, nsl, dir == 1) {
					return true
				}
			}
		}
	}
	return false
}

func (m *Model) unresolve(pe *policyEntry) {
	pe.resolved, pe.compiled = false, [2][]*compiledRule{}
	m.unresolved[pe] = true
}

func (m *Model) updatePolicies(pols []*networkingv1.NetworkPolicy) {
	reconcile(pols, func(p *networkingv1.NetworkPolicy) string { return p.Namespace + "/" + p.Name }, m.policies,
		func(pe *policyEntry) *networkingv1.NetworkPolicy { return pe.pol }, m.setPolicy)
}

// setPolicy replaces the policy at key (pol nil: deleted). The pods the
// old version selects are recomputed now, those the new one selects once
// every change is in (it is unresolved until then).
func (m *Model) setPolicy(key string, old *policyEntry, pol *networkingv1.NetworkPolicy) {
	if old != nil {
		m.markSelected(old.parsedPolicy)
		delete(m.policies, key)
		delete(m.polByNS[old.pol.Namespace], old.pol.Name)
		if len(m.polByNS[old.pol.Namespace]) == 0 {
			delete(m.polByNS, old.pol.Namespace)
		}
		delete(m.unresolved, old)
	}
	if pol == nil {
		return
	}
	pe := &policyEntry{parsedPolicy: parsePolicy(pol)}
	for _, r := range pe.rules[1] {
		pe.podDependent = pe.podDependent || r.podDependent
	}
	m.policies[key] = pe
	if m.polByNS[pol.Namespace] == nil {
		m.polByNS[pol.Namespace] = map[string]*policyEntry{}
	}
	m.polByNS[pol.Namespace][pol.Name] = pe
	m.unresolve(pe)
}

// markSelected marks the local pods p selects for recomputing.
func (m *Model) markSelected(p *parsedPolicy) {
	if p.sel == nil {
		return
	}
	for ip, pp := range m.byNS[p.pol.Namespace] {
		if pp.local && p.sel.Matches(pp.lbl) {
			m.dirty[ip] = true
		}
	}
}

// recompute builds the endpoint at ip from scratch, as Compute does.
func (m *Model) recompute(ip netip.Addr) {
	lp := m.winner[ip]
	if lp == nil || !lp.local {
		delete(m.eps, ip)
		return
	}
	ep := &Endpoint{Pod: types.NamespacedName{Namespace: lp.ns, Name: lp.name}, IP: ip}
	var g [2][]grant
	for _, pe := range m.polByNS[lp.ns] {
		if pe.sel == nil || !pe.sel.Matches(lp.lbl) {
			continue
		}
		if !pe.resolved {
			pe.compiled, pe.resolved = pe.resolve(m), true
		}
		pe.addGrants(ep, &g, pe.compiled, lp, m)
	}
	if len(ep.Policies) > 0 {
		slices.Sort(ep.Policies)
		ep.Ingress = flatten(g[0], m.podIPs())
		ep.Egress = flatten(g[1], m.podIPs())
	}
	m.eps[ip] = ep
}

func (m *Model) podIPs() []netip.Addr {
	if m.ipList == nil {
		m.ipList = slices.Collect(maps.Keys(m.winner))
	}
	return m.ipList
}

func (m *Model) namespaceLabels(ns string) labels.Set { return namespaceLabels(m.nsLabels, ns) }

func (m *Model) peer(ip netip.Addr) *peerPod {
	if m.dns != nil && ip == m.dns.ip {
		return m.dns
	}
	return m.winner[ip]
}

func (m *Model) selectPods(s peerSel, polNS string, egress bool) []*peerPod {
	var out []*peerPod
	pick := func(pods map[netip.Addr]*peerPod, nsl labels.Set) {
		for _, pp := range pods {
			if s.matches(pp, polNS, nsl, egress) {
				out = append(out, pp)
			}
		}
	}
	if s.ns == nil {
		pick(m.byNS[polNS], m.namespaceLabels(polNS))
	} else {
		for ns, pods := range m.byNS {
			if nsl := m.namespaceLabels(ns); s.ns.Matches(nsl) {
				pick(pods, nsl)
			}
		}
	}
	if m.dns != nil && s.matches(m.dns, polNS, m.namespaceLabels(m.dns.ns), egress) {
		out = append(out, m.dns)
	}
	return out
}
