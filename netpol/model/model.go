// Package model computes what NetworkPolicy (networking.k8s.io/v1) allows
// for each pod of a node, in plain Go: the desired state Skiff's eBPF
// policy programs enforce. The input is what informers hold (Pods,
// Namespaces, NetworkPolicies); the output, per local pod, is whether it
// is isolated in each direction and, for an isolated direction, the peers
// it may talk to as longest-prefix-match entries with the ports each may
// use. The applier (netpol/) writes them into BPF maps.
//
// Semantics, as upstream defines them:
//   - a policy selecting a pod isolates it for the directions in its
//     policyTypes (default: Ingress, plus Egress when it has egress rules);
//     a pod no policy selects is not isolated, and everything passes;
//   - the allowed traffic of an isolated direction is the union of the
//     rules of every policy selecting the pod; no rule (ingress: []) is
//     default deny, an empty rule ({}) allows everything;
//   - a rule with no from/to allows every peer, with no ports every port
//     and protocol; a peer's podSelector alone means pods of the policy's
//     namespace, namespaceSelector alone all pods of the namespaces it
//     selects, both together pods matching both (AND);
//   - ports: a number, a number with endPort (a range), or a name, which is
//     resolved against the container ports of the pod receiving the
//     traffic (the local pod for ingress, each destination pod for egress);
//     a name no container declares matches nothing;
//   - ipBlock is CIDR minus its excepts. Skiff matches it against every
//     address, pod IPs included (upstream leaves this to implementations;
//     its e2e suite expects pod IPs to match, as Calico and Cilium do).
//
// Skiff's additions: the node-local DNS server (the kube-dns ClusterIP is
// sent to the node's own address by the socket load balancer) is seen as a
// pod of namespace kube-system labelled k8s-app=kube-dns at the node's
// address, serving 53/UDP ("dns") and 53/TCP ("dns-tcp") and nothing else;
// a plain port-53 rule allows it as any other destination. Traffic from
// the node itself (kubelet probes, host-network pods) is always allowed by
// the programs, not by this model.
package model

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// State is a snapshot of the objects policy depends on.
type State struct {
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	Policies   []*networkingv1.NetworkPolicy
}

// Options say which pods are local and what the node-local DNS looks like.
type Options struct {
	NodeName string
	// DNS, when set, is the node-local cluster DNS, matched as a pod.
	DNS *DNSPeer
}

// DNSPeer is the node-local cluster DNS seen as a pod.
type DNSPeer struct {
	Namespace string
	Labels    map[string]string
	Addr      netip.Addr
}

// NodeDNS is Skiff's node-local DNS at addr: namespace kube-system, the
// label CoreDNS pods carry (k8s-app=kube-dns).
func NodeDNS(addr netip.Addr) *DNSPeer {
	return &DNSPeer{Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}, Addr: addr}
}

// dnsPorts are the only ports of the DNS peer.
var dnsPorts = PortSet{Ranges: []PortRange{{ProtoTCP, 53, 53}, {ProtoUDP, 53, 53}}}

// dnsContainerPorts name them as CoreDNS's pod does.
var dnsContainerPorts = []corev1.ContainerPort{
	{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
	{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
}

// Endpoint is a local pod and what policy allows it.
type Endpoint struct {
	Pod types.NamespacedName
	IP  netip.Addr
	// Policies selecting the pod, as namespace/name, sorted.
	Policies []string
	// IngressIsolated and EgressIsolated say whether any selecting policy
	// covers the direction; only then do Ingress and Egress apply.
	IngressIsolated, EgressIsolated bool
	Ingress, Egress                 []Entry
}

// Allows reports whether the pod may receive from (ingress) or send to
// (egress) peer on proto/port, by the same longest-prefix match the kernel
// does. It does not know about conntrack or the node's own traffic.
func (e *Endpoint) Allows(egress bool, peer netip.Addr, proto uint8, port uint16) bool {
	if egress {
		return !e.EgressIsolated || lookup(e.Egress, peer).Contains(proto, port)
	}
	return !e.IngressIsolated || lookup(e.Ingress, peer).Contains(proto, port)
}

// peerPod is a pod that can be a peer: it has an IPv4 address of its own.
type peerPod struct {
	ip       netip.Addr
	ns, name string
	lbl      labels.Set
	local    bool // on this node
	deleting bool
	// ports are its container ports, for named ports.
	ports []corev1.ContainerPort
	// limit caps what may reach it (the DNS peer: port 53 only).
	limit *PortSet
}

// Compute returns the node's local pods (by IP) and what policy allows
// each, from scratch. It is the reference: Model gives the same result
// incrementally. Problems with single policies (an unparsable CIDR or
// selector, which API validation normally rejects) are returned as errors
// naming the policy and field; the rest is computed, the faulty peer
// matching nothing.
func Compute(s State, opts Options) (map[netip.Addr]*Endpoint, error) {
	c := &computation{opts: opts, nsLabels: map[string]labels.Set{}, byIP: map[netip.Addr]*peerPod{}}
	for _, ns := range s.Namespaces {
		c.nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	for _, p := range s.Pods {
		pp := newPeerPod(p, opts.NodeName)
		if pp == nil {
			continue
		}
		if cur := c.byIP[pp.ip]; cur == nil || prefer(pp, cur) {
			c.byIP[pp.ip] = pp
		}
	}
	out := map[netip.Addr]*Endpoint{}
	for ip, pp := range c.byIP {
		c.pods = append(c.pods, pp)
		c.podIPs = append(c.podIPs, ip)
		if pp.local {
			out[ip] = &Endpoint{Pod: types.NamespacedName{Namespace: pp.ns, Name: pp.name}, IP: ip}
			c.local = append(c.local, pp)
		}
	}
	if dns := newDNSPeer(opts.DNS); dns != nil {
		c.pods = append(c.pods, dns)
		c.byIP[dns.ip] = dns
	}
	var errs []error
	grants := map[netip.Addr]*[2][]grant{}
	for _, pol := range s.Policies {
		p := parsePolicy(pol)
		errs = append(errs, p.errs...)
		c.policy(p, out, grants)
	}
	for ip, ep := range out {
		slices.Sort(ep.Policies)
		if g := grants[ip]; g != nil {
			ep.Ingress = flatten(g[0], c.podIPs)
			ep.Egress = flatten(g[1], c.podIPs)
		}
	}
	return out, joinSorted(errs)
}

// joinSorted joins errors in a stable order (by message).
func joinSorted(errs []error) error {
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

type computation struct {
	opts     Options
	nsLabels map[string]labels.Set
	pods     []*peerPod // one per address, and the DNS peer
	byIP     map[netip.Addr]*peerPod
	podIPs   []netip.Addr
	local    []*peerPod
}

func newPeerPod(p *corev1.Pod, nodeName string) *peerPod {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil
	}
	var ip netip.Addr
	for _, a := range p.Status.PodIPs {
		if v, err := netip.ParseAddr(a.IP); err == nil && v.Is4() {
			ip = v
			break
		}
	}
	if !ip.IsValid() {
		if v, err := netip.ParseAddr(p.Status.PodIP); err == nil && v.Is4() {
			ip = v
		}
	}
	if !ip.IsValid() {
		return nil
	}
	pp := &peerPod{ip: ip, ns: p.Namespace, name: p.Name, lbl: labels.Set(p.Labels),
		local: p.Spec.NodeName == nodeName, deleting: p.DeletionTimestamp != nil}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, ctr := range cs {
			pp.ports = append(pp.ports, ctr.Ports...)
		}
	}
	return pp
}

func newDNSPeer(d *DNSPeer) *peerPod {
	if d == nil || !d.Addr.Is4() {
		return nil
	}
	return &peerPod{ip: d.Addr, ns: d.Namespace, lbl: labels.Set(d.Labels), ports: dnsContainerPorts, limit: &dnsPorts}
}

// prefer says which of two pods claiming one address is the one there:
// an address is reused once its pod's sandbox is gone, while the old pod
// object may linger being deleted, so a pod not being deleted wins; then,
// to be deterministic, the first by namespace and name.
func prefer(a, b *peerPod) bool {
	if a.deleting != b.deleting {
		return !a.deleting
	}
	if a.ns != b.ns {
		return a.ns < b.ns
	}
	return a.name < b.name
}

// parsedPolicy is a policy as written: selectors, ports and peers, parsed
// once per version of the object. What its peer selectors pick depends on
// the pods and namespaces of the moment and is resolved separately.
type parsedPolicy struct {
	pol             *networkingv1.NetworkPolicy
	key             string          // namespace/name
	sel             labels.Selector // nil: unparsable, the policy selects no pod
	ingress, egress bool
	rules           [2][]*parsedRule // ingress, egress (directions it isolates)
	errs            []error
}

func parsePolicy(pol *networkingv1.NetworkPolicy) *parsedPolicy {
	p := &parsedPolicy{pol: pol, key: pol.Namespace + "/" + pol.Name}
	sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.PodSelector)
	if err != nil {
		p.errorf("spec.podSelector: %v; the policy selects no pod until it is fixed", err)
		return p
	}
	p.sel = sel
	p.ingress, p.egress = policyTypes(pol)
	if p.ingress {
		for i, r := range pol.Spec.Ingress {
			p.rules[0] = append(p.rules[0], p.parseRule(fmt.Sprintf("spec.ingress[%d]", i), r.From, r.Ports, false))
		}
	}
	if p.egress {
		for i, r := range pol.Spec.Egress {
			p.rules[1] = append(p.rules[1], p.parseRule(fmt.Sprintf("spec.egress[%d]", i), r.To, r.Ports, true))
		}
	}
	return p
}

func (p *parsedPolicy) errorf(format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("NetworkPolicy %s: %s", p.key, fmt.Sprintf(format, args...)))
}

// resolve compiles the policy's rules against the pods of ix.
func (p *parsedPolicy) resolve(ix podIndex) [2][]*compiledRule {
	var out [2][]*compiledRule
	for dir, rules := range p.rules {
		for _, r := range rules {
			out[dir] = append(out[dir], resolveRule(r, p.pol.Namespace, dir == 1, ix))
		}
	}
	return out
}

// addGrants adds what the policy's compiled rules give the local pod lp
// to ep and g (ingress, egress).
func (p *parsedPolicy) addGrants(ep *Endpoint, g *[2][]grant, rules [2][]*compiledRule, lp *peerPod, ix podIndex) {
	ep.Policies = append(ep.Policies, p.key)
	if p.ingress {
		ep.IngressIsolated = true
	}
	if p.egress {
		ep.EgressIsolated = true
	}
	for dir, rs := range rules {
		for _, r := range rs {
			g[dir] = append(g[dir], grants(r, lp, dir == 1, ix)...)
		}
	}
}

// policy applies one policy to the local pods it selects.
func (c *computation) policy(p *parsedPolicy, out map[netip.Addr]*Endpoint, grants map[netip.Addr]*[2][]grant) {
	if p.sel == nil {
		return
	}
	var selected []*peerPod
	for _, lp := range c.local {
		if lp.ns == p.pol.Namespace && p.sel.Matches(lp.lbl) {
			selected = append(selected, lp)
		}
	}
	if len(selected) == 0 {
		return // a policy that selects nothing changes nothing
	}
	rules := p.resolve(c)
	for _, lp := range selected {
		g := grants[lp.ip]
		if g == nil {
			g = &[2][]grant{}
			grants[lp.ip] = g
		}
		p.addGrants(out[lp.ip], g, rules, lp, c)
	}
}

// policyTypes are the directions a policy isolates: as given, or by
// default Ingress, plus Egress when it has egress rules.
func policyTypes(pol *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(pol.Spec.PolicyTypes) == 0 {
		return true, len(pol.Spec.Egress) > 0
	}
	for _, t := range pol.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}
