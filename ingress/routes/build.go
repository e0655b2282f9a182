package routes

import (
	"fmt"
	"net"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Names Skiff answers to unless Input says otherwise.
const (
	// ClassName is the IngressClass (and GatewayClass) name Skiff serves.
	ClassName = "skiff"
	// Controller is the IngressClass spec.controller of Skiff's classes.
	Controller = "skiff.io/ingress-controller"
	// GatewayController is the GatewayClass spec.controllerName.
	GatewayController = "skiff.io/gateway-controller"
)

// Input is everything a Table is built from: plain objects, as listers
// return them. Build does not modify them.
type Input struct {
	// ClassName and Controller select the Ingresses to serve (defaults
	// ClassName and Controller).
	ClassName  string
	Controller string

	Ingresses      []*networkingv1.Ingress
	IngressClasses []*networkingv1.IngressClass
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Secrets        []*corev1.Secret

	// Gateway holds the Gateway API objects; nil leaves the API out.
	Gateway *GatewayInput

	// Certs caches parsed certificates between builds; nil parses anew.
	Certs *CertCache
}

// Problem is something in the input that Build could not honour: the rest
// of the configuration still applies.
type Problem struct {
	Object  string // kind/namespace/name
	Message string
}

func (p Problem) String() string { return p.Object + ": " + p.Message }

// Result is a built Table and what the controller needs to report back.
type Result struct {
	Table *Table
	// Ingresses are the Ingresses the table serves, for status updates.
	Ingresses []*networkingv1.Ingress
	// Gateway is the Gateway API status to write; nil without GatewayInput.
	Gateway  *GatewayStatus
	Problems []Problem
}

// Build compiles the input into a Table.
func Build(in Input) *Result {
	if in.ClassName == "" {
		in.ClassName = ClassName
	}
	if in.Controller == "" {
		in.Controller = Controller
	}
	in.Certs.begin()
	defer in.Certs.end()
	b := &builder{
		in:       &in,
		svcs:     map[types.NamespacedName]*corev1.Service{},
		slices:   map[types.NamespacedName][]*discoveryv1.EndpointSlice{},
		secrets:  map[types.NamespacedName]*corev1.Secret{},
		backends: map[string]*Backend{},
		t:        &Table{},
		res:      &Result{},
	}
	for _, s := range in.Services {
		b.svcs[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	for _, s := range in.EndpointSlices {
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		k := types.NamespacedName{Namespace: s.Namespace, Name: svc}
		b.slices[k] = append(b.slices[k], s)
	}
	for _, s := range in.Secrets {
		b.secrets[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	b.ingresses()
	if in.Gateway != nil {
		b.gateways(in.Gateway)
	}
	b.t.listeners.sort()
	for _, s := range b.t.gateways {
		s.sort()
	}
	b.res.Table = b.t
	return b.res
}

// sort orders every host group of the site for matching.
func (s *site) sort() {
	for i := range s {
		h := &s[i]
		for _, g := range h.exact {
			sortGroup(g)
		}
		for _, w := range h.wild {
			sortGroup(w.g)
		}
		if h.any != nil {
			sortGroup(h.any)
		}
		// longest suffix first; Ingress (single label) before Gateway
		// (any depth) for the same suffix as it is the narrower match.
		sort.SliceStable(h.wild, func(i, j int) bool {
			a, b := h.wild[i], h.wild[j]
			if len(a.suffix) != len(b.suffix) {
				return len(a.suffix) > len(b.suffix)
			}
			return a.single && !b.single
		})
	}
}

type builder struct {
	in       *Input
	svcs     map[types.NamespacedName]*corev1.Service
	slices   map[types.NamespacedName][]*discoveryv1.EndpointSlice
	secrets  map[types.NamespacedName]*corev1.Secret
	backends map[string]*Backend
	t        *Table
	res      *Result
	order    int
}

func (b *builder) problem(object, format string, args ...any) {
	b.res.Problems = append(b.res.Problems, Problem{Object: object, Message: fmt.Sprintf(format, args...)})
}

// add puts rt under host on the listeners. host "" is any host; a host
// starting with "*." is a wildcard, of one label when single.
func (b *builder) add(ls []Listener, host string, single bool, rt *Route) {
	rt.order = b.order
	b.order++
	rt.finish()
	b.t.routes++
	for _, l := range ls {
		b.group(&b.t.listeners[l], host, single).insert(rt)
	}
}

func (b *builder) group(h *hosts, host string, single bool) *group {
	switch {
	case host == "":
		if h.any == nil {
			h.any = &group{}
		}
		return h.any
	case len(host) > 2 && host[:2] == "*.":
		suffix := host[1:]
		for _, w := range h.wild {
			if w.suffix == suffix && w.single == single {
				return w.g
			}
		}
		w := &wildGroup{suffix: suffix, single: single, g: &group{}}
		h.wild = append(h.wild, w)
		return w.g
	}
	if h.exact == nil {
		h.exact = map[string]*group{}
	}
	g := h.exact[host]
	if g == nil {
		g = &group{}
		h.exact[host] = g
	}
	return g
}

// servicePort names a port of a Service by number or by name.
type servicePort struct {
	Number int32
	Name   string
}

func (p servicePort) String() string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(int(p.Number))
}

// backend resolves a Service port to its endpoints. Backends are shared per
// Service port. The error says why the reference does not resolve; the
// Backend is then nil.
func (b *builder) backend(ns, name string, port servicePort) (*Backend, error) {
	key := ns + "/" + name + ":" + port.String()
	if be, ok := b.backends[key]; ok {
		return be, nil
	}
	svc := b.svcs[types.NamespacedName{Namespace: ns, Name: name}]
	if svc == nil {
		return nil, fmt.Errorf("service %s/%s not found", ns, name)
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if (port.Name != "" && p.Name == port.Name) || (port.Name == "" && p.Port == port.Number) {
			sp = p
			break
		}
	}
	if sp == nil {
		return nil, fmt.Errorf("service %s/%s has no port %s", ns, name, port)
	}
	if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
		return nil, fmt.Errorf("service %s/%s port %s is %s, not TCP", ns, name, port, sp.Protocol)
	}
	be := &Backend{Name: ns + "/" + name + ":" + port.String()}
	if sp.AppProtocol != nil && *sp.AppProtocol == AppProtocolH2C {
		be.Protocol = H2C
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		be.Endpoints = []string{net.JoinHostPort(svc.Spec.ExternalName, strconv.Itoa(int(sp.Port)))}
	} else {
		be.Endpoints = b.endpoints(svc, sp)
	}
	b.backends[key] = be
	return be, nil
}

// endpoints returns the ready addresses of a Service port; when there are
// none, the serving addresses of terminating endpoints (as kube-proxy does),
// so that requests in a rolling update's last moments still find a pod.
func (b *builder) endpoints(svc *corev1.Service, sp *corev1.ServicePort) []string {
	var ready, serving []string
	seen := map[string]bool{}
	for _, s := range b.slices[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}] {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var port int32 = -1
		for _, p := range s.Ports {
			pname := ""
			if p.Name != nil {
				pname = *p.Name
			}
			if pname == sp.Name && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port < 0 {
			continue
		}
		ps := strconv.Itoa(int(port))
		for _, ep := range s.Endpoints {
			c := ep.Conditions
			isReady := c.Ready == nil || *c.Ready
			isServing := isReady
			if c.Serving != nil {
				isServing = *c.Serving
			}
			terminating := c.Terminating != nil && *c.Terminating
			for _, a := range ep.Addresses {
				addr := net.JoinHostPort(a, ps)
				if seen[addr] {
					continue
				}
				switch {
				case isReady && !terminating:
					seen[addr] = true
					ready = append(ready, addr)
				case isServing && terminating:
					seen[addr] = true
					serving = append(serving, addr)
				}
			}
		}
	}
	if len(ready) == 0 {
		ready = serving
	}
	sort.Strings(ready)
	return ready
}
