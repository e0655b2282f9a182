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

// ports compiles a rule's ports; a bad entry is reported and skipped, so it
// allows nothing.
func (c *computation) ports(pol *networkingv1.NetworkPolicy, field string, ps []networkingv1.NetworkPolicyPort) *portSpec {
	if len(ps) == 0 {
		return &portSpec{all: true}
	}
	spec := &portSpec{}
	for i, p := range ps {
		proto := ProtoTCP
		if p.Protocol != nil {
			proto = protoNumber(*p.Protocol)
		}
		switch {
		case p.Port == nil:
			spec.numbered = spec.numbered.Union(PortSet{Ranges: []PortRange{{proto, 0, 65535}}})
		case p.Port.Type == intstr.String:
			spec.named = append(spec.named, namedPort{proto, p.Port.StrVal})
		default:
			first, last := p.Port.IntVal, p.Port.IntVal
			if p.EndPort != nil {
				last = *p.EndPort
			}
			if first < 1 || last > 65535 || last < first {
				c.errorf(pol, "%s.ports[%d]: port %d endPort %d: want 1 <= port <= endPort <= 65535; the entry matches nothing", field, i, first, last)
				continue
			}
			spec.numbered = spec.numbered.Union(PortSet{Ranges: []PortRange{{proto, uint16(first), uint16(last)}}})
		}
	}
	return spec
}

// compiledRule is one ingress or egress rule with its peers resolved: the
// same for every pod the policy selects, so it is done once per policy.
type compiledRule struct {
	spec   *portSpec
	blocks []*block
	pods   []*peerPod
}

// compile resolves a rule's ports and peers.
func (c *computation) compile(pol *networkingv1.NetworkPolicy, field string, peers []networkingv1.NetworkPolicyPeer, ps []networkingv1.NetworkPolicyPort, egress bool) *compiledRule {
	r := &compiledRule{spec: c.ports(pol, field, ps)}
	if len(peers) == 0 {
		r.blocks = []*block{{cidr: everywhere}}
		return r
	}
	for i, peer := range peers {
		pf := fmt.Sprintf("%s.%s[%d]", field, map[bool]string{false: "from", true: "to"}[egress], i)
		if peer.IPBlock != nil {
			if b := c.ipBlock(pol, pf, peer.IPBlock); b != nil {
				r.blocks = append(r.blocks, b)
			}
			continue
		}
		r.pods = append(r.pods, c.selectPods(pol, pf, peer, egress)...)
	}
	return r
}

// grants are what a compiled rule gives the local pod lp.
func (c *computation) grants(r *compiledRule, lp *peerPod, egress bool) []grant {
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
					if pp := c.byIP[dst]; pp != nil && pp.limit == nil {
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

func (c *computation) ipBlock(pol *networkingv1.NetworkPolicy, field string, ib *networkingv1.IPBlock) *block {
	cidr, err := netip.ParsePrefix(ib.CIDR)
	if err != nil {
		c.errorf(pol, "%s.ipBlock.cidr %q: %v; the peer matches nothing", field, ib.CIDR, err)
		return nil
	}
	if !cidr.Addr().Is4() {
		return nil // IPv6: Skiff's pod network is IPv4 only
	}
	b := &block{cidr: cidr.Masked()}
	for j, e := range ib.Except {
		ep, err := netip.ParsePrefix(e)
		if err != nil {
			c.errorf(pol, "%s.ipBlock.except[%d] %q: %v; the peer matches nothing", field, j, e, err)
			return nil
		}
		if ep.Addr().Is4() {
			b.excepts = append(b.excepts, ep.Masked())
		}
	}
	return b
}

// selectPods are the pods (and the DNS peer, as a destination) a
// podSelector / namespaceSelector peer selects.
func (c *computation) selectPods(pol *networkingv1.NetworkPolicy, field string, peer networkingv1.NetworkPolicyPeer, egress bool) []*peerPod {
	podSel, nsSel := labels.Everything(), labels.Selector(nil)
	var err error
	if peer.PodSelector != nil {
		if podSel, err = metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
			c.errorf(pol, "%s.podSelector: %v; the peer matches nothing", field, err)
			return nil
		}
	}
	if peer.NamespaceSelector != nil {
		if nsSel, err = metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
			c.errorf(pol, "%s.namespaceSelector: %v; the peer matches nothing", field, err)
			return nil
		}
	}
	var out []*peerPod
	for _, pp := range c.pods {
		if pp.limit != nil && !egress {
			continue // the DNS peer is a destination only
		}
		if nsSel == nil {
			if pp.ns != pol.Namespace {
				continue
			}
		} else if !nsSel.Matches(c.namespaceLabels(pp.ns)) {
			continue
		}
		if podSel.Matches(pp.lbl) {
			out = append(out, pp)
		}
	}
	return out
}

// namespaceLabels are a namespace's labels; the API server sets
// kubernetes.io/metadata.name on every namespace, and it is assumed here
// for a namespace the informer has not delivered yet.
func (c *computation) namespaceLabels(ns string) labels.Set {
	if l, ok := c.nsLabels[ns]; ok {
		return l
	}
	return labels.Set{corev1.LabelMetadataName: ns}
}
