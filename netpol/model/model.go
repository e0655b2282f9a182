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
	pod *corev1.Pod
	ip  netip.Addr
	ns  string
	lbl labels.Set
	// ports are its container ports, for named ports.
	ports []corev1.ContainerPort
	// limit caps what may reach it (the DNS peer: port 53 only).
	limit *PortSet
}

// Compute returns the node's local pods (by IP) and what policy allows
// each. Problems with single policies (an unparsable CIDR or selector,
// which API validation normally rejects) are returned as errors naming the
// policy and field; the rest is computed, the faulty peer matching nothing.
func Compute(s State, opts Options) (map[netip.Addr]*Endpoint, error) {
	c := &computation{opts: opts, nsLabels: map[string]labels.Set{}, byIP: map[netip.Addr]*peerPod{}}
	for _, ns := range s.Namespaces {
		c.nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	out := map[netip.Addr]*Endpoint{}
	for _, p := range s.Pods {
		pp := newPeerPod(p)
		if pp == nil {
			continue
		}
		c.pods = append(c.pods, pp)
		c.byIP[pp.ip] = pp
		c.podIPs = append(c.podIPs, pp.ip)
		if p.Spec.NodeName == opts.NodeName {
			out[pp.ip] = &Endpoint{Pod: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, IP: pp.ip}
			c.local = append(c.local, pp)
		}
	}
	if d := opts.DNS; d != nil && d.Addr.Is4() {
		dns := &peerPod{ip: d.Addr, ns: d.Namespace, lbl: labels.Set(d.Labels), ports: dnsContainerPorts, limit: &dnsPorts}
		c.pods = append(c.pods, dns)
		c.byIP[dns.ip] = dns
	}
	grants := map[netip.Addr]*[2][]grant{}
	for _, pol := range s.Policies {
		c.policy(pol, out, grants)
	}
	for ip, ep := range out {
		slices.Sort(ep.Policies)
		if g := grants[ip]; g != nil {
			ep.Ingress = flatten(g[0], c.podIPs)
			ep.Egress = flatten(g[1], c.podIPs)
		}
	}
	return out, errors.Join(c.errs...)
}

type computation struct {
	opts     Options
	nsLabels map[string]labels.Set
	pods     []*peerPod // every pod with an address, and the DNS peer
	byIP     map[netip.Addr]*peerPod
	podIPs   []netip.Addr
	local    []*peerPod
	errs     []error
}

func newPeerPod(p *corev1.Pod) *peerPod {
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
	pp := &peerPod{pod: p, ip: ip, ns: p.Namespace, lbl: labels.Set(p.Labels)}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, ctr := range cs {
			pp.ports = append(pp.ports, ctr.Ports...)
		}
	}
	return pp
}

func (c *computation) errorf(pol *networkingv1.NetworkPolicy, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("NetworkPolicy %s/%s: %s", pol.Namespace, pol.Name, fmt.Sprintf(format, args...)))
}

// policy applies one policy to the local pods it selects.
func (c *computation) policy(pol *networkingv1.NetworkPolicy, out map[netip.Addr]*Endpoint, grants map[netip.Addr]*[2][]grant) {
	sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.PodSelector)
	if err != nil {
		c.errorf(pol, "spec.podSelector: %v; the policy selects no pod until it is fixed", err)
		return
	}
	ingress, egress := policyTypes(pol)
	var selected []*peerPod
	for _, lp := range c.local {
		if lp.ns == pol.Namespace && sel.Matches(lp.lbl) {
			selected = append(selected, lp)
		}
	}
	if len(selected) == 0 {
		return // a policy that selects nothing changes nothing
	}
	var in, eg []*compiledRule
	if ingress {
		for i, r := range pol.Spec.Ingress {
			in = append(in, c.compile(pol, fmt.Sprintf("spec.ingress[%d]", i), r.From, r.Ports, false))
		}
	}
	if egress {
		for i, r := range pol.Spec.Egress {
			eg = append(eg, c.compile(pol, fmt.Sprintf("spec.egress[%d]", i), r.To, r.Ports, true))
		}
	}
	for _, lp := range selected {
		ep := out[lp.ip]
		ep.Policies = append(ep.Policies, pol.Namespace+"/"+pol.Name)
		g := grants[lp.ip]
		if g == nil {
			g = &[2][]grant{}
			grants[lp.ip] = g
		}
		if ingress {
			ep.IngressIsolated = true
			for _, r := range in {
				g[0] = append(g[0], c.grants(r, lp, false)...)
			}
		}
		if egress {
			ep.EgressIsolated = true
			for _, r := range eg {
				g[1] = append(g[1], c.grants(r, lp, true)...)
			}
		}
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
