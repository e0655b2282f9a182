package announce

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffnet/skiff/ingress/routes"
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

func TestGatewayAddresses(t *testing.T) {
	gw := func(name, class, addr string) *gatewayv1.Gateway {
		g := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: gatewayv1.GatewaySpec{GatewayClassName: gatewayv1.ObjectName(class)}}
		if addr != "" {
			g.Annotations = map[string]string{routes.AddressAnnotation: addr}
		}
		return g
	}
	classes := []*gatewayv1.GatewayClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "skiff"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.GatewayController}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/gw"}},
	}
	got := GatewayAddresses(classes, []*gatewayv1.Gateway{
		gw("a", "skiff", "172.30.0.241"),
		gw("none", "skiff", ""),
		gw("foreign", "other", "172.30.0.242"),
		gw("node", "skiff", "172.30.0.11"),
		gw("bad", "skiff", "x"),
	}, map[netip.Addr]bool{netip.MustParseAddr("172.30.0.11"): true})
	if len(got) != 1 || got[0] != netip.MustParseAddr("172.30.0.241") {
		t.Errorf("GatewayAddresses = %v, want [172.30.0.241]: only Skiff's classes, not node addresses", got)
	}
}
