package model

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func TestHealthCheck(t *testing.T) {
	lb := func(policy v1.ServiceExternalTrafficPolicy, hc int32) *v1.Service {
		return service("web", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = policy
			s.Spec.HealthCheckNodePort = hc
		})
	}
	eps := []*discoveryv1.EndpointSlice{
		// Two ports of the same pods count once; not ready and terminating
		// ones do not count, nor do other nodes' endpoints.
		slice("web", 8080, "http", "10.0.0.1@n1", "10.0.0.2@n1", "10.0.0.3@n1!", "10.0.0.4@n1~", "10.0.1.1@n2"),
		slice("web", 8443, "https", "10.0.0.1@n1", "10.0.0.2@n1"),
	}
	for _, tc := range []struct {
		name        string
		svc         *v1.Service
		eps         []*discoveryv1.EndpointSlice
		node        string
		port, local int
	}{
		{"local policy", lb(v1.ServiceExternalTrafficPolicyLocal, 32000), eps, "n1", 32000, 2},
		{"no local endpoint", lb(v1.ServiceExternalTrafficPolicyLocal, 32000), eps, "n3", 32000, 0},
		{"no endpoints at all", lb(v1.ServiceExternalTrafficPolicyLocal, 32000), nil, "n1", 32000, 0},
		{"only terminating", lb(v1.ServiceExternalTrafficPolicyLocal, 32000), []*discoveryv1.EndpointSlice{slice("web", 80, "http", "10.0.0.4@n1~")}, "n1", 32000, 0},
		{"cluster policy", lb(v1.ServiceExternalTrafficPolicyCluster, 0), eps, "n1", 0, 0},
		{"no port allocated", lb(v1.ServiceExternalTrafficPolicyLocal, 0), eps, "n1", 0, 0},
	} {
		port, local := HealthCheck(tc.svc, tc.eps, tc.node)
		if int(port) != tc.port || local != tc.local {
			t.Errorf("%s: port %d, %d local endpoints; want %d, %d", tc.name, port, local, tc.port, tc.local)
		}
	}
}
