package model

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// HealthCheck returns the healthCheckNodePort a Service wants answered on
// node, and how many of its endpoints are on node, or port 0 when the
// Service has none (only externalTrafficPolicy Local LoadBalancers get
// one). A load balancer sends traffic only to nodes that answer 200, that
// is, that have a local endpoint.
//
// As kube-proxy, only ready endpoints count: a node whose endpoints are all
// terminating answers 503 and the load balancer drains it, even though the
// node still serves the connections it gets.
func HealthCheck(svc *v1.Service, eps []*discoveryv1.EndpointSlice, node string) (port uint16, local int) {
	if Ignored(svc) || svc.Spec.HealthCheckNodePort <= 0 || svc.Spec.HealthCheckNodePort > 65535 ||
		svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
		return 0, 0
	}
	seen := map[netip.Addr]bool{}
	for _, s := range eps {
		if s.AddressType != discoveryv1.AddressTypeIPv4 || ignoredLabels(s.Labels) {
			continue
		}
		for _, e := range s.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			if !ready || terminating || e.NodeName == nil || *e.NodeName != node {
				continue
			}
			for _, a := range e.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					seen[ip] = true
				}
			}
		}
	}
	return uint16(svc.Spec.HealthCheckNodePort), len(seen)
}
