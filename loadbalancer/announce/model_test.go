package announce

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func lb(name string, local bool, class string, ips ...string) *v1.Service {
	s := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer}}
	if local {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}
	if class != "" {
		s.Spec.LoadBalancerClass = &class
	}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
	}
	return s
}

func slice(node string, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{Endpoints: []discoveryv1.Endpoint{{
		Addresses: []string{"10.244.1.5"}, NodeName: &node, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
	}}}
}

func TestDesired(t *testing.T) {
	svcs := []*v1.Service{
		lb("cluster", false, "", "192.168.9.1"),
		lb("local-here", true, "", "192.168.9.2"),
		lb("local-elsewhere", true, "", "192.168.9.3"),
		lb("local-not-ready", true, "", "192.168.9.4"),
		lb("nodes", false, "", "172.30.0.11", "172.30.0.12"),
		lb("foreign", false, "example.com/lb", "192.168.9.5"),
		lb("shared-local", true, "", "192.168.9.6"),
		lb("shared-cluster", false, "", "192.168.9.6"),
	}
	slices := map[string][]*discoveryv1.EndpointSlice{
		"ns/local-here":      {slice("n1", true), slice("n2", true)},
		"ns/local-elsewhere": {slice("n2", true)},
		"ns/local-not-ready": {slice("n1", false)},
	}
	nodeAddrs := map[netip.Addr]bool{netip.MustParseAddr("172.30.0.11"): true, netip.MustParseAddr("172.30.0.12"): true}
	got := Desired(svcs, slices, nodeAddrs, "n1")
	want := map[string]bool{"192.168.9.1": true, "192.168.9.2": true, "192.168.9.3": false, "192.168.9.4": false, "192.168.9.6": true}
	if len(got) != len(want) {
		t.Errorf("Desired = %v, want %v", got, want)
	}
	for a, w := range want {
		if e, ok := got[netip.MustParseAddr(a)]; !ok || e != w {
			t.Errorf("%s: eligible=%v present=%v, want eligible=%v", a, e, ok, w)
		}
	}
}
