package model

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

var node = Node{Name: "n1", IPs: []netip.Addr{netip.MustParseAddr("192.168.10.1"), netip.MustParseAddr("192.168.20.1")}}

func service(name string, mutate ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10"},
			Ports:      []v1.ServicePort{{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}},
		},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

// ep is an endpoint spec: "10.0.0.1@n1" ready on n1; suffixes "!" not
// ready, "~" terminating and serving, "x" terminating and not serving, "p"
// terminating and not serving but ready (a Service that publishes not-ready
// addresses).
func slice(svc string, port int32, portName string, eps ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: svc + "-" + fmt.Sprint(port),
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(portName), Port: ptr.To(port), Protocol: ptr.To(v1.ProtocolTCP)}},
	}
	for _, e := range eps {
		addr, nodeName, _ := strings.Cut(strings.TrimRight(e, "!~xp"), "@")
		c := discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}
		switch {
		case strings.HasSuffix(e, "!"):
			c = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
		case strings.HasSuffix(e, "~"):
			c = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
		case strings.HasSuffix(e, "x"):
			c = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(true)}
		case strings.HasSuffix(e, "p"):
			c = discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(false), Terminating: ptr.To(true)}
		}
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: ptr.To(nodeName), Conditions: c})
	}
	return s
}

// line renders a frontend as "scope kind addr:port/proto -> backends [flags]".
func line(f Frontend) string {
	var b []string
	for _, a := range f.Backends {
		b = append(b, a.String())
	}
	s := fmt.Sprintf("%s %s %s:%d/%s -> [%s]", f.Scope, f.Kind, f.Addr, f.Key.Port, f.Proto, strings.Join(b, " "))
	if f.NoLocal {
		s += " nolocal"
	}
	if f.AffinityTimeout != 0 {
		s += fmt.Sprintf(" affinity=%d", f.AffinityTimeout)
	}
	return s
}

func lines(fs []Frontend) []string {
	var out []string
	for _, f := range fs {
		out = append(out, line(f))
	}
	slices.Sort(out)
	return out
}

func TestService(t *testing.T) {
	for _, tc := range []struct {
		name   string
		svc    *v1.Service
		slices []*discoveryv1.EndpointSlice
		opts   Options
		want   []string
	}{{
		name:   "cluster IP spreads over ready endpoints on every node",
		svc:    service("web"),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1", "10.2.0.2@n2", "10.3.0.2@n3!")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080 10.2.0.2:8080]"},
	}, {
		name:   "endpoints in several slices are merged and deduplicated",
		svc:    service("web"),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1"), slice("web", 8080, "http", "10.2.0.2@n2", "10.1.0.2@n1")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080 10.2.0.2:8080]"},
	}, {
		name: "no endpoints: a frontend with no backends, which refuses",
		svc:  service("web"),
		want: []string{"internal ClusterIP 10.96.0.10:80/TCP -> []"},
	}, {
		name:   "serving terminating endpoints only when none is ready",
		svc:    service("web"),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1~", "10.2.0.2@n2x", "10.3.0.2@n3!")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080]"},
	}, {
		name:   "terminating endpoints are not used next to ready ones",
		svc:    service("web"),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1~", "10.2.0.2@n2")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.2.0.2:8080]"},
	}, {
		name:   "endpoints ready while terminating (publishNotReadyAddresses) are used",
		svc:    service("web"),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1p", "10.2.0.2@n2!")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080]"},
	}, {
		name:   "a Service labelled for another service proxy is left alone",
		svc:    service("web", func(s *v1.Service) { s.Labels = map[string]string{LabelServiceProxyName: "foo-bar"} }),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1")},
	}, {
		name: "an EndpointSlice labelled headless adds no endpoints",
		svc:  service("web"),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1"), func() *discoveryv1.EndpointSlice {
			s := slice("web", 8080, "http", "10.2.0.2@n2")
			s.Name += "-custom"
			s.Labels[v1.IsHeadlessService] = ""
			return s
		}()},
		want: []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080]"},
	}, {
		name:   "a Service labelled headless is left alone",
		svc:    service("web", func(s *v1.Service) { s.Labels = map[string]string{v1.IsHeadlessService: ""} }),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1")},
	}, {
		name: "named ports resolve per slice port name",
		svc: service("web", func(s *v1.Service) {
			s.Spec.Ports = []v1.ServicePort{{Name: "http", Port: 80}, {Name: "metrics", Port: 9090}}
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1"), slice("web", 9100, "metrics", "10.1.0.2@n1")},
		want: []string{
			"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080]",
			"internal ClusterIP 10.96.0.10:9090/TCP -> [10.1.0.2:9100]",
		},
	}, {
		name: "UDP and TCP on one port number are separate frontends",
		svc: service("dns", func(s *v1.Service) {
			s.Spec.Ports = []v1.ServicePort{{Name: "dns", Port: 53, Protocol: v1.ProtocolUDP}, {Name: "dns-tcp", Port: 53, Protocol: v1.ProtocolTCP}}
		}),
		slices: []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
			s := slice("dns", 53, "dns-tcp", "10.1.0.5@n1")
			s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To("dns"), Port: ptr.To(int32(5353)), Protocol: ptr.To(v1.ProtocolUDP)})
			return s
		}()},
		want: []string{
			"internal ClusterIP 10.96.0.10:53/TCP -> [10.1.0.5:53]",
			"internal ClusterIP 10.96.0.10:53/UDP -> [10.1.0.5:5353]",
		},
	}, {
		name: "internalTrafficPolicy Local uses only this node's endpoints",
		svc: service("web", func(s *v1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1", "10.2.0.2@n2")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080]"},
	}, {
		name: "internalTrafficPolicy Local without a local endpoint is unreachable, not refused",
		svc: service("web", func(s *v1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.2.0.2@n2")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [] nolocal"},
	}, {
		name: "internalTrafficPolicy Local falls back to local terminating endpoints",
		svc: service("web", func(s *v1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1~", "10.2.0.2@n2")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080]"},
	}, {
		name: "NodePort answers on every node address, both scopes",
		svc: service("web", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 30080
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1", "10.2.0.2@n2")},
		want: []string{
			"external NodePort 192.168.10.1:30080/TCP -> [10.1.0.2:8080 10.2.0.2:8080]",
			"external NodePort 192.168.20.1:30080/TCP -> [10.1.0.2:8080 10.2.0.2:8080]",
			"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080 10.2.0.2:8080]",
			"internal NodePort 192.168.10.1:30080/TCP -> [10.1.0.2:8080 10.2.0.2:8080]",
			"internal NodePort 192.168.20.1:30080/TCP -> [10.1.0.2:8080 10.2.0.2:8080]",
		},
	}, {
		name: "externalTrafficPolicy Local: outside traffic to local endpoints, the node's own to all",
		svc: service("web", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			s.Spec.Ports[0].NodePort = 30080
			s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "203.0.113.7"}}
		}),
		opts:   Options{},
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1", "10.2.0.2@n2")},
		want: []string{
			"external LoadBalancer 203.0.113.7:80/TCP -> [10.1.0.2:8080]",
			"external NodePort 192.168.10.1:30080/TCP -> [10.1.0.2:8080]",
			"external NodePort 192.168.20.1:30080/TCP -> [10.1.0.2:8080]",
			"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080 10.2.0.2:8080]",
			"internal LoadBalancer 203.0.113.7:80/TCP -> [10.1.0.2:8080 10.2.0.2:8080]",
			"internal NodePort 192.168.10.1:30080/TCP -> [10.1.0.2:8080 10.2.0.2:8080]",
			"internal NodePort 192.168.20.1:30080/TCP -> [10.1.0.2:8080 10.2.0.2:8080]",
		},
	}, {
		name: "externalTrafficPolicy Local without a local endpoint drops outside traffic",
		svc: service("web", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeNodePort
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			s.Spec.Ports[0].NodePort = 30080
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.2.0.2@n2")},
		want: []string{
			"external NodePort 192.168.10.1:30080/TCP -> [] nolocal",
			"external NodePort 192.168.20.1:30080/TCP -> [] nolocal",
			"internal ClusterIP 10.96.0.10:80/TCP -> [10.2.0.2:8080]",
			"internal NodePort 192.168.10.1:30080/TCP -> [10.2.0.2:8080]",
			"internal NodePort 192.168.20.1:30080/TCP -> [10.2.0.2:8080]",
		},
	}, {
		name: "externalIPs, and LoadBalancer ingress in Proxy mode is left to the load balancer",
		svc: service("web", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Spec.ExternalIPs = []string{"198.51.100.1"}
			s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "203.0.113.8", IPMode: ptr.To(v1.LoadBalancerIPModeProxy)}, {Hostname: "lb.example"}}
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1")},
		want: []string{
			"external ExternalIP 198.51.100.1:80/TCP -> [10.1.0.2:8080]",
			"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080]",
			"internal ExternalIP 198.51.100.1:80/TCP -> [10.1.0.2:8080]",
		},
	}, {
		name: "sessionAffinity ClientIP with its timeout, or the default",
		svc: service("web", func(s *v1.Service) {
			s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(60))}}
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080] affinity=60"},
	}, {
		name: "sessionAffinity ClientIP default timeout",
		svc: service("web", func(s *v1.Service) {
			s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		}),
		want: []string{"internal ClusterIP 10.96.0.10:80/TCP -> [] affinity=10800"},
	}, {
		name: "headless Services are left to DNS",
		svc: service("web", func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = v1.ClusterIPNone, []string{v1.ClusterIPNone}
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1")},
	}, {
		name: "ExternalName Services are left to DNS",
		svc: service("web", func(s *v1.Service) {
			s.Spec.Type, s.Spec.ExternalName = v1.ServiceTypeExternalName, "example.com"
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
		}),
	}, {
		name: "dual-stack: the IPv4 cluster IP only; IPv6 slices ignored",
		svc: service("web", func(s *v1.Service) {
			s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00::10"}
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1"), func() *discoveryv1.EndpointSlice {
			s := slice("web", 8080, "http", "fd00:1::2@n1")
			s.AddressType = discoveryv1.AddressTypeIPv6
			return s
		}()},
		want: []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080]"},
	}, {
		name: "SCTP ports are skipped",
		svc: service("web", func(s *v1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "sctp", Port: 99, Protocol: v1.ProtocolSCTP})
		}),
		slices: []*discoveryv1.EndpointSlice{slice("web", 8080, "http", "10.1.0.2@n1")},
		want:   []string{"internal ClusterIP 10.96.0.10:80/TCP -> [10.1.0.2:8080]"},
	}, {
		name: "a redirected Service goes to the node-local address whatever its endpoints",
		svc: service("kube-dns", func(s *v1.Service) {
			s.Spec.Ports = []v1.ServicePort{{Name: "dns", Port: 53, Protocol: v1.ProtocolUDP}}
		}),
		opts: Options{Redirects: map[types.NamespacedName]netip.Addr{{Namespace: "ns", Name: "kube-dns"}: netip.MustParseAddr("169.254.20.10")}},
		want: []string{"internal ClusterIP 10.96.0.10:53/UDP -> [169.254.20.10:53]"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := lines(Service(tc.svc, tc.slices, node, tc.opts))
			if !slices.Equal(got, tc.want) {
				t.Errorf("frontends:\n got  %s\n want %s", strings.Join(got, "\n      "), strings.Join(tc.want, "\n      "))
			}
		})
	}
}

func TestServiceName(t *testing.T) {
	s := slice("web", 80, "http")
	if n, ok := ServiceName(s); !ok || n != (types.NamespacedName{Namespace: "ns", Name: "web"}) {
		t.Errorf("ServiceName = %v, %v", n, ok)
	}
	delete(s.Labels, discoveryv1.LabelServiceName)
	if _, ok := ServiceName(s); ok {
		t.Error("a slice without the service-name label belongs to no Service")
	}
}
