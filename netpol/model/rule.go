package model

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// everywhere is the peer of a rule without from/to.
var everywhere = netip.MustParsePrefix("0.0.0.0/0")

// portSpec is a rule's ports: numbered ranges and names still to resolve.
type portSpec struct {
	all      bool // no ports given: every port and protocol
	numbered PortSet
	named    []namedPort
}

type namedPort struct {
	proto uint8
	name  string
}

// resolve is the set the spec allows towards a pod with these container
// ports (nil for an address that is no pod: names match nothing).
func (s *portSpec) resolve(ports []corev1.ContainerPort) PortSet {
	if s.all {
		return AnyPort
	}
	out := s.numbered
	for _, n := range s.named {
		for _, cp := range ports {
			if cp.Name == n.name && protoNumber(cp.Protocol) == n.proto && cp.ContainerPort > 0 && cp.ContainerPort < 65536 {
				p := uint16(cp.ContainerPort)
				out = out.Union(PortSet{Ranges: []PortRange{{n.proto, p, p}}})
			}
		}
	}
	return out
}

func protoNumber(p corev1.Protocol) uint8 {
	switch p {
	case corev1.ProtocolUDP:
		return ProtoUDP
	case corev1.ProtocolSCTP:
		return ProtoSCTP
	}
	return ProtoTCP // the API's default
}

// ports parses a rule's ports; a bad entry is reported and skipped, so it
// allows nothing.
func (p *parsedPolicy) ports(field string, ps []networkingv1.NetworkPolicyPort) *portSpec {
	if len(ps) == 0 {
		return &portSpec{all: true}
	}
	spec := &portSpec{}
	for i, np := range ps {
		proto := ProtoTCP
		if np.Protocol != nil {
			proto = protoNumber(*np.Protocol)
		}
		switch {
		case np.Port == nil:
			spec.numbered = spec.numbered.Union(PortSet{Ranges: []PortRange{{proto, 0, 65535}}})
		case np.Port.Type == intstr.String:
			spec.named = append(spec.named, namedPort{proto, np.Port.StrVal})
		default:
			first, last := np.Port.IntVal, np.Port.IntVal
			if np.EndPort != nil {
				last = *np.EndPort
			}
			if first < 1 || last > 65535 || last < first {
				p.errorf("%s.ports[%d]: port %d endPort %d: want 1 <= port <= endPort <= 65535; the entry matches nothing", field, i, first, last)
				continue
			}
			spec.numbered = spec.numbered.Union(PortSet{Ranges: []PortRange{{proto, uint16(first), uint16(last)}}})
		}
	}
	return spec
}

// parsedRule is one ingress or egress rule as written: its ports, address
// blocks and pod selectors. It depends on the policy object only.
type parsedRule struct {
	spec   *portSpec
	blocks []*block
	peers  []peerSel
	// podDependent: egress ports named over an ipBlock resolve against
	// whatever pod holds each address, so every pod change may change them.
	podDependent bool
}

// peerSel is a podSelector / namespaceSelector peer.
type peerSel struct {
	pod labels.Selector
	ns  labels.Selector // nil: the policy's own namespace
}

// matches reports whether pp is a peer this selector picks, given the
// labels of pp's namespace.
func (s peerSel) matches(pp *peerPod, polNS string, nsLabels labels.Set, egress bool) bool {
	if pp.limit != nil && !egress {
		return false // the DNS peer is a destination only
	}
	if s.ns == nil {
		if pp.ns != polNS {
			return false
		}
	} else if !s.ns.Matches(nsLabels) {
		return false
	}
	return s.pod.Matches(pp.lbl)
}

// parseRule parses a rule's ports and peers.
func (p *parsedPolicy) parseRule(field string, peers []networkingv1.NetworkPolicyPeer, ps []networkingv1.NetworkPolicyPort, egress bool) *parsedRule {
	r := &parsedRule{spec: p.ports(field, ps)}
	if len(peers) == 0 {
		r.blocks = []*block{{cidr: everywhere}}
	}
	for i, peer := range peers {
		pf := fmt.Sprintf("%s.%s[%d]", field, map[bool]string{false: "from", true: "to"}[egress], i)
		if peer.IPBlock != nil {
			if b := p.ipBlock(pf, peer.IPBlock); b != nil {
				r.blocks = append(r.blocks, b)
			}
			continue
		}
		if s, ok := p.peerSelector(pf, peer); ok {
			r.peers = append(r.peers, s)
		}
	}
	r.podDependent = egress && len(r.spec.named) > 0 && len(r.blocks) > 0
	return r
}

// compiledRule is a parsed rule with its selectors resolved to the pods
// of the moment: the same for every pod the policy selects.
type compiledRule struct {
	spec   *portSpec
	blocks []*block
	pods   []*peerPod
}

// podIndex is what resolving rules needs from the pods and namespaces:
// Compute scans everything, Model keeps indexes.
type podIndex interface {
	// peer is the pod (or the DNS peer) at an address.
	peer(ip netip.Addr) *peerPod
	// selectPods are the pods (and the DNS peer, as a destination) s picks.
	selectPods(s peerSel, polNS string, egress bool) []*peerPod
}

func resolveRule(r *parsedRule, polNS string, egress bool, ix podIndex) *compiledRule {
	cr := &compiledRule{spec: r.spec, blocks: r.blocks}
	for _, s := range r.peers {
		cr.pods = append(cr.pods, ix.selectPods(s, polNS, egress)...)
	}
	return cr
}

// grants are what a compiled rule gives the local pod lp.
func grants(r *compiledRule, lp *peerPod, egress bool, ix podIndex) []grant {
	spec := r.spec
	// Ingress: names are the local pod's ports, the same for every peer.
	local := spec.resolve(lp.ports)
	var out []grant
	for _, b := range r.blocks {
		g := grant{block: b, ports: local}
		if egress {
			g.ports = spec.resolve(nil)
			if len(spec.named) > 0 {
				g.resolve = func(dst netip.Addr) PortSet {
					if pp := ix.peer(dst); pp != nil && pp.limit == nil {
						return spec.resolve(pp.ports)
					}
					return spec.resolve(nil)
				}
			}
		}
		out = append(out, g)
	}
	for _, pp := range r.pods {
		s := local
		if egress {
			s = spec.resolve(pp.ports)
			if pp.limit != nil {
				s = s.Intersect(*pp.limit)
			}
		}
		if !s.Empty() {
			out = append(out, grant{pod: pp.ip, ports: s})
		}
	}
	return out
}

func (p *parsedPolicy) ipBlock(field string, ib *networkingv1.IPBlock) *block {
	cidr, err := netip.ParsePrefix(ib.CIDR)
	if err != nil {
		p.errorf("%s.ipBlock.cidr %q: %v; the peer matches nothing", field, ib.CIDR, err)
		return nil
	}
	if !cidr.Addr().Is4() {
		return nil // IPv6: Skiff's pod network is IPv4 only
	}
	b := &block{cidr: cidr.Masked()}
	for j, e := range ib.Except {
		ep, err := netip.ParsePrefix(e)
		if err != nil {
			p.errorf("%s.ipBlock.except[%d] %q: %v; the peer matches nothing", field, j, e, err)
			return nil
		}
		if ep.Addr().Is4() {
			b.excepts = append(b.excepts, ep.Masked())
		}
	}
	return b
}

// peerSelector parses a podSelector / namespaceSelector peer.
func (p *parsedPolicy) peerSelector(field string, peer networkingv1.NetworkPolicyPeer) (peerSel, bool) {
	s := peerSel{pod: labels.Everything()}
	var err error
	if peer.PodSelector != nil {
		if s.pod, err = metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
			p.errorf("%s.podSelector: %v; the peer matches nothing", field, err)
			return s, false
		}
	}
	if peer.NamespaceSelector != nil {
		if s.ns, err = metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
			p.errorf("%s.namespaceSelector: %v; the peer matches nothing", field, err)
			return s, false
		}
	}
	return s, true
}

// selectPods scans every pod: the reference Model's indexes are checked against.
func (c *computation) selectPods(s peerSel, polNS string, egress bool) []*peerPod {
	var out []*peerPod
	for _, pp := range c.pods {
		if s.matches(pp, polNS, c.namespaceLabels(pp.ns), egress) {
			out = append(out, pp)
		}
	}
	return out
}

func (c *computation) peer(ip netip.Addr) *peerPod { return c.byIP[ip] }

// namespaceLabels are a namespace's labels; the API server sets
// kubernetes.io/metadata.name on every namespace, and it is assumed here
// for a namespace the informer has not delivered yet.
func (c *computation) namespaceLabels(ns string) labels.Set {
	return namespaceLabels(c.nsLabels, ns)
}

func namespaceLabels(known map[string]labels.Set, ns string) labels.Set {
	if l, ok := known[ns]; ok {
		return l
	}
	return labels.Set{corev1.LabelMetadataName: ns}
}
