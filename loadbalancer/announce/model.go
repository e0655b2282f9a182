// Package announce makes one node answer ARP for each LoadBalancer
// address, so clients on the nodes' L2 segment reach it with no route to
// configure. Which node answers is elected per address with a
// coordination.k8s.io Lease (client-go leaderelection); the holder replies
// to ARP requests and sends gratuitous ARP when it takes over. The tc
// programs already balance what reaches the node (proxy/model captures
// status.loadBalancer.ingress addresses on every node).
//
// It reads as watch → model → apply: Desired is a pure function of the
// informers' objects; the elector runs one candidate per address; the
// responder answers for what this node leads.
package announce

import (
	"net/netip"
	"sort"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/skiffnet/skiff/loadbalancer/pool"
)

// Desired returns the addresses the node named node should run for, each
// with whether it is eligible: every Skiff LoadBalancer address except the
// nodes' own (node-address mode needs no announcement). With
// externalTrafficPolicy Local only a node with a ready endpoint of the
// Service is eligible; a node that is not must not answer, or traffic
// would reach a node that drops it. An address shared by several Services
// is eligible when any of them makes it so.
func Desired(svcs []*v1.Service, slices map[string][]*discoveryv1.EndpointSlice, nodeAddrs map[netip.Addr]bool, node string) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, s := range svcs {
		if !pool.Ours(s) {
			continue
		}
		eligible := s.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal ||
			hasLocalEndpoint(slices[s.Namespace+"/"+s.Name], node)
		for _, ing := range s.Status.LoadBalancer.Ingress {
			a, err := netip.ParseAddr(ing.IP)
			if err != nil || !a.Is4() || nodeAddrs[a] {
				continue
			}
			out[a] = out[a] || eligible
		}
	}
	return out
}

func hasLocalEndpoint(slices []*discoveryv1.EndpointSlice, node string) bool {
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if e.NodeName != nil && *e.NodeName == node && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
				return true
			}
		}
	}
	return false
}

// Sorted lists a set of addresses in order.
func Sorted(set map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}
