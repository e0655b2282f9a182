// Package model computes what a node's service load balancer should hold:
// from Services and EndpointSlices, the frontends (address, port, protocol)
// the node answers and the backends each one spreads connections over,
// following kube-proxy's semantics. It is plain Go, with no kernel and no
// API server, so every rule is unit-tested.
package model

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Proto is an IP protocol number.
type Proto uint8

const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return "proto-" + strconv.Itoa(int(p))
}

// Scope says which traffic a frontend applies to.
type Scope uint8

const (
	// External frontends handle packets entering the node (tc programs).
	External Scope = 0
	// Internal frontends handle sockets of the node's own processes and pods
	// (cgroup programs).
	Internal Scope = 1
)

func (s Scope) String() string {
	if s == Internal {
		return "internal"
	}
	return "external"
}

// Kind is how a Service exposes a frontend.
type Kind string

const (
	ClusterIP    Kind = "ClusterIP"
	NodePort     Kind = "NodePort"
	ExternalIP   Kind = "ExternalIP"
	LoadBalancer Kind = "LoadBalancer"
)

// Key identifies a frontend in the load balancer's maps.
type Key struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
	Scope Scope
}

// Frontend is one address a Service answers on, with its backends.
type Frontend struct {
	Key
	Kind    Kind
	Service types.NamespacedName
	Port    string // the ServicePort's name

	// Backends in a stable (sorted) order. Empty means connections are
	// refused at once, or with NoLocal, that the node has no endpoint for
	// a Local traffic policy (kube-proxy drops those; the socket hooks
	// answer EHOSTUNREACH, so a client need not wait for a timeout).
	Backends []netip.AddrPort
	NoLocal  bool

	// AffinityTimeout is sessionAffinity ClientIP's timeout in seconds,
	// 0 without affinity.
	AffinityTimeout uint32
}

// Node is the node whose view is computed.
type Node struct {
	Name string
	IPs  []netip.Addr // addresses NodePorts answer on
}

// Options change how particular Services are served.
type Options struct {
	// Redirects sends every port of a Service to a node-local address at
	// the ServicePort's number, ignoring its endpoints: how the cluster DNS
	// Service reaches the DNS server inside each agent.
	Redirects map[types.NamespacedName]netip.Addr
}

const defaultAffinityTimeout = 10800 // v1.DefaultClientIPServiceAffinitySeconds

// ServiceName is the Service an EndpointSlice belongs to, from its label.
func ServiceName(s *discoveryv1.EndpointSlice) (types.NamespacedName, bool) {
	name, ok := s.Labels[discoveryv1.LabelServiceName]
	return types.NamespacedName{Namespace: s.Namespace, Name: name}, ok && name != ""
}

// LabelServiceProxyName marks a Service that another service proxy
// implements; kube-proxy, and so Skiff, leaves it alone.
const LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// Ignored says whether svc is labelled for another service proxy or as
// headless: kube-proxy's informers filter such Services out, and upstream's
// e2e tests check that they are not reachable.
func Ignored(svc *v1.Service) bool { return ignoredLabels(svc.Labels) }

// ignoredLabels applies kube-proxy's label selector, which filters
// EndpointSlices too: a slice labelled headless (or for another proxy)
// contributes no endpoints.
func ignoredLabels(l map[string]string) bool {
	_, other := l[LabelServiceProxyName]
	_, headless := l[v1.IsHeadlessService]
	return other || headless
}

// Service returns the frontends of one Service on node, given the
// EndpointSlices that belong to it. Headless and ExternalName Services have
// none: DNS answers for them and no address needs balancing. Neither do
// Ignored ones.
func Service(svc *v1.Service, eps []*discoveryv1.EndpointSlice, node Node, opts Options) []Frontend {
	if svc.Spec.Type == v1.ServiceTypeExternalName || svc.Spec.ClusterIP == v1.ClusterIPNone || svc.Spec.ClusterIP == "" {
		return nil
	}
	if Ignored(svc) {
		return nil
	}
	name := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	redirect, redirected := opts.Redirects[name]
	var timeout uint32
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		timeout = defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			timeout = uint32(*c.ClientIP.TimeoutSeconds)
		}
	}
	internalLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal
	externalLocal := svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal

	var out []Frontend
	for _, sp := range svc.Spec.Ports {
		proto, ok := protocol(sp.Protocol)
		if !ok {
			continue
		}
		var cluster, local []netip.AddrPort
		if redirected {
			cluster = []netip.AddrPort{netip.AddrPortFrom(redirect, uint16(sp.Port))}
			local = cluster
		} else {
			cluster, local = endpoints(eps, sp, node.Name)
		}
		add := func(addr netip.Addr, port uint16, scope Scope, kind Kind, policyLocal bool) {
			if !addr.Is4() || port == 0 {
				return
			}
			f := Frontend{
				Key:     Key{Addr: addr, Port: port, Proto: proto, Scope: scope},
				Kind:    kind,
				Service: name, Port: sp.Name,
				Backends:        cluster,
				AffinityTimeout: timeout,
			}
			if policyLocal {
				f.Backends = local
				f.NoLocal = len(local) == 0 && len(cluster) > 0
			}
			out = append(out, f)
		}
		for _, ip := range svc.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				add(a, uint16(sp.Port), Internal, ClusterIP, internalLocal)
			}
		}
		// Addresses reachable from outside: traffic entering the node
		// follows externalTrafficPolicy, while the node's own processes
		// and pods go to any endpoint, as kube-proxy short-circuits them
		// to the cluster-wide set.
		external := func(addr netip.Addr, port uint16, kind Kind) {
			add(addr, port, Internal, kind, false)
			add(addr, port, External, kind, externalLocal)
		}
		if sp.NodePort != 0 {
			for _, a := range node.IPs {
				external(a, uint16(sp.NodePort), NodePort)
			}
		}
		for _, ip := range svc.Spec.ExternalIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				external(a, uint16(sp.Port), ExternalIP)
			}
		}
		if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
			for _, ing := range svc.Status.LoadBalancer.Ingress {
				// Proxy mode: the load balancer sends packets to the node's
				// own address, so the ingress IP must not be captured here.
				if ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy {
					continue
				}
				if a, err := netip.ParseAddr(ing.IP); err == nil {
					external(a, uint16(sp.Port), LoadBalancer)
				}
			}
		}
	}
	return out
}

func protocol(p v1.Protocol) (Proto, bool) {
	switch p {
	case v1.ProtocolTCP, "":
		return TCP, true
	case v1.ProtocolUDP:
		return UDP, true
	}
	return 0, false // SCTP is not balanced yet
}

type endpoint struct {
	addr                        netip.AddrPort
	ready, serving, terminating bool
	local                       bool
}

// endpoints returns the backends of ServicePort sp cluster-wide and on
// node: ready endpoints, or when none is ready, the serving ones that are
// terminating, so connections keep working through a rolling update.
func endpoints(eps []*discoveryv1.EndpointSlice, sp v1.ServicePort, node string) (cluster, local []netip.AddrPort) {
	seen := map[netip.AddrPort]bool{}
	var all []endpoint
	for _, s := range eps {
		if s.AddressType != discoveryv1.AddressTypeIPv4 || ignoredLabels(s.Labels) {
			continue
		}
		port, ok := slicePort(s, sp)
		if !ok {
			continue
		}
		for _, e := range s.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := ready
			if e.Conditions.Serving != nil {
				serving = *e.Conditions.Serving
			}
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			for _, a := range e.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil || !ip.Is4() {
					continue
				}
				ap := netip.AddrPortFrom(ip, port)
				if seen[ap] {
					continue
				}
				seen[ap] = true
				all = append(all, endpoint{
					// Ready as the EndpointSlice says, as kube-proxy reads it:
					// the controller already leaves terminating endpoints
					// unready, except for Services that publish not-ready
					// addresses, whose endpoints are all to be used.
					addr: ap, ready: ready, serving: serving, terminating: terminating,
					local: e.NodeName != nil && *e.NodeName == node,
				})
			}
		}
	}
	pick := func(onlyLocal bool) []netip.AddrPort {
		var ready, fallback []netip.AddrPort
		for _, e := range all {
			if onlyLocal && !e.local {
				continue
			}
			if e.ready {
				ready = append(ready, e.addr)
			} else if e.serving && e.terminating {
				fallback = append(fallback, e.addr)
			}
		}
		if len(ready) == 0 {
			ready = fallback
		}
		slices.SortFunc(ready, netip.AddrPort.Compare)
		return ready
	}
	return pick(false), pick(true)
}

// slicePort finds the number of ServicePort sp in a slice: ports match by
// name and protocol, which is how named targetPorts resolve per Pod.
func slicePort(s *discoveryv1.EndpointSlice, sp v1.ServicePort) (uint16, bool) {
	want := cmp.Or(sp.Protocol, v1.ProtocolTCP)
	for _, p := range s.Ports {
		name, proto := "", v1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if name == sp.Name && proto == want && p.Port != nil && *p.Port > 0 && *p.Port < 65536 {
			return uint16(*p.Port), true
		}
	}
	return 0, false
}
