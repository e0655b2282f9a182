// Package dnstest builds the Service and EndpointSlice objects that cluster
// DNS tests and benchmarks serve: the same fixture set the end-to-end test
// creates on a real cluster, so unit, server and cluster tests check one thing.
package dnstest

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Port is a named Service port and the endpoint port behind it.
type Port struct {
	Name   string
	Proto  corev1.Protocol // default TCP
	Port   int32
	Target int32 // default Port
}

func (p Port) proto() corev1.Protocol {
	if p.Proto == "" {
		return corev1.ProtocolTCP
	}
	return p.Proto
}

func (p Port) target() int32 {
	if p.Target == 0 {
		return p.Port
	}
	return p.Target
}

// Service returns a ClusterIP Service; clusterIP "None" makes it headless.
func Service(ns, name, clusterIP string, ports ...Port) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: clusterIP,
		},
	}
	if clusterIP != "" {
		svc.Spec.ClusterIPs = []string{clusterIP}
	}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.Name, Protocol: p.proto(), Port: p.Port})
	}
	return svc
}

// ExternalName returns an ExternalName Service pointing at target.
func ExternalName(ns, name, target string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: target},
	}
}

// Endpoint is one address of a slice.
type Endpoint struct {
	IP       string
	Hostname string // optional: the pod's spec.hostname when its subdomain is the Service
	NotReady bool
}

// Slice returns an EndpointSlice of Service ns/svc holding eps on ports.
// The address type follows the first endpoint's IP.
func Slice(ns, svc, name string, ports []Port, eps ...Endpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	if len(eps) > 0 {
		if ip, err := netip.ParseAddr(eps[0].IP); err == nil && ip.Is6() {
			s.AddressType = discoveryv1.AddressTypeIPv6
		}
	}
	for _, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(p.proto()), Port: ptr(p.target())})
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{
			Addresses:  []string{e.IP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(!e.NotReady)},
		}
		if e.Hostname != "" {
			ep.Hostname = ptr(e.Hostname)
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// Set is the fixture cluster: what each test serves and queries.
type Set struct {
	Services []*corev1.Service
	Slices   []*discoveryv1.EndpointSlice
}

// Fixtures is the standard set, in namespace ns:
//   - web: ClusterIP 10.96.1.10, port http/80 and an unnamed 8080
//   - db: headless, endpoints 10.244.1.5 (hostname db-0) and 10.244.2.6
//     (no hostname) ready, 10.244.3.7 not ready; port pg/5432
//   - web-ss: headless StatefulSet governing Service, pods web-ss-0/1
//     at 10.244.1.20/10.244.2.21; port http/80
//   - empty: headless, only a not-ready endpoint (NXDOMAIN)
//   - warm: headless, publishNotReadyAddresses, one not-ready endpoint
//   - ext: ExternalName to ext.example.com
//   - dual: dual-stack ClusterIP 10.96.1.11 and fd00:96::11
func Fixtures(ns string) Set {
	http := Port{Name: "http", Port: 80}
	pg := Port{Name: "pg", Port: 5432}
	web := Service(ns, "web", "10.96.1.10", http, Port{Port: 8080})
	dual := Service(ns, "dual", "10.96.1.11", http)
	dual.Spec.ClusterIPs = []string{"10.96.1.11", "fd00:96::11"}
	warm := Service(ns, "warm", "None", http)
	warm.Spec.PublishNotReadyAddresses = true
	return Set{
		Services: []*corev1.Service{
			web, dual, warm,
			Service(ns, "db", "None", pg),
			Service(ns, "web-ss", "None", http),
			Service(ns, "empty", "None", http),
			ExternalName(ns, "ext", "ext.example.com"),
		},
		Slices: []*discoveryv1.EndpointSlice{
			Slice(ns, "web", "web-1", []Port{http}, Endpoint{IP: "10.244.1.10"}),
			Slice(ns, "db", "db-1", []Port{pg},
				Endpoint{IP: "10.244.1.5", Hostname: "db-0"},
				Endpoint{IP: "10.244.2.6"},
				Endpoint{IP: "10.244.3.7", NotReady: true}),
			Slice(ns, "web-ss", "web-ss-1", []Port{{Name: "http", Port: 80, Target: 8080}},
				Endpoint{IP: "10.244.1.20", Hostname: "web-ss-0"},
				Endpoint{IP: "10.244.2.21", Hostname: "web-ss-1"}),
			Slice(ns, "empty", "empty-1", []Port{http}, Endpoint{IP: "10.244.1.30", NotReady: true}),
			Slice(ns, "warm", "warm-1", []Port{http}, Endpoint{IP: "10.244.1.31", NotReady: true}),
		},
	}
}

// Many returns n ClusterIP Services with one ready endpoint each, for
// benchmarks that need a realistically sized table.
func Many(ns string, n int) Set {
	var s Set
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		s.Services = append(s.Services, Service(ns, name, fmt.Sprintf("10.97.%d.%d", i/250, i%250+1), Port{Name: "http", Port: 80}))
		s.Slices = append(s.Slices, Slice(ns, name, name+"-1", []Port{{Name: "http", Port: 80}},
			Endpoint{IP: fmt.Sprintf("10.245.%d.%d", i/250, i%250+1)}))
	}
	return s
}
