package pool

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffnet/skiff/loadbalancer/api"
)

// Port is a port number and protocol, what two users of one address must
// not both claim.
type Port struct {
	Number int32
	Proto  v1.Protocol
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Number, p.Proto) }

// Service is a LoadBalancer Service as the allocator sees it, or a
// Gateway (Gateway set): both take addresses from the same pools, so one
// allocation keeps an address from going to both.
type Service struct {
	Name    types.NamespacedName
	Gateway bool
	Created time.Time
	Labels  labels.Set
	Ports   []Port
	// Requested is the address asked for in spec.loadBalancerIP or the
	// lb.skiff.io/ips annotation; RequestErr says why that request is bad.
	Requested  netip.Addr
	RequestErr error
	SharingKey string
	// Local is externalTrafficPolicy Local; Selector is spec.selector,
	// which Services sharing a Local address must have in common (their
	// endpoints decide which node may announce the address).
	Local    bool
	Selector string
	// Current are the addresses in status.loadBalancer.ingress.
	Current []netip.Addr
}

// Who names s in messages: "Service ns/name" or "Gateway ns/name".
func (s Service) Who() string {
	if s.Gateway {
		return "Gateway " + s.Name.String()
	}
	return "Service " + s.Name.String()
}

// Ours reports whether Skiff allocates for svc: a LoadBalancer Service
// with no class or Skiff's own. Other classes belong to another
// controller, and Skiff leaves them alone.
func Ours(svc *v1.Service) bool {
	if svc.Spec.Type != v1.ServiceTypeLoadBalancer || svc.DeletionTimestamp != nil {
		return false
	}
	c := svc.Spec.LoadBalancerClass
	return c == nil || *c == "" || *c == api.Class
}

// FromService reads what the allocator needs from svc.
func FromService(svc *v1.Service) Service {
	s := Service{
		Name:       types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name},
		Created:    svc.CreationTimestamp.Time,
		Labels:     labels.Set(svc.Labels),
		SharingKey: svc.Annotations[api.SharingKeyAnnotation],
		Local:      svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal,
		Selector:   labels.Set(svc.Spec.Selector).String(),
	}
	for _, p := range svc.Spec.Ports {
		s.Ports = append(s.Ports, Port{Number: p.Port, Proto: cmp.Or(p.Protocol, v1.ProtocolTCP)})
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			s.Current = append(s.Current, a)
		}
	}
	s.Requested, s.RequestErr = requested(svc)
	return s
}

// requested reads the one address a Service asks for, if any.
func requested(svc *v1.Service) (netip.Addr, error) {
	field, value := "spec.loadBalancerIP", svc.Spec.LoadBalancerIP
	if ann := strings.TrimSpace(svc.Annotations[api.IPsAnnotation]); ann != "" {
		if value != "" && value != ann {
			return netip.Addr{}, fmt.Errorf("spec.loadBalancerIP %s and annotation %s %s disagree: set only one", value, api.IPsAnnotation, ann)
		}
		field, value = "annotation "+api.IPsAnnotation, ann
	}
	if value == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(value)
	switch {
	case strings.Contains(value, ","):
		return netip.Addr{}, fmt.Errorf("%s %q: Skiff is IPv4-only, so a Service has one address: give one", field, value)
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%s %q is not an IP address", field, value)
	case !a.Is4():
		return netip.Addr{}, fmt.Errorf("%s %s: IPv6 addresses are not supported until Skiff is dual-stack", field, a)
	}
	return a, nil
}

// holder is who holds an address: one Service, or several with the same
// sharing key.
type holder struct {
	who      []string
	key      string
	ports    map[Port]bool
	local    bool
	selector string
}

func newHolder(s Service) *holder {
	h := &holder{key: s.SharingKey, ports: map[Port]bool{}, local: s.Local, selector: s.Selector}
	h.add(s)
	return h
}

func (h *holder) add(s Service) {
	h.who = append(h.who, s.Who())
	for _, p := range s.Ports {
		h.ports[p] = true
	}
}

// refuses says why s cannot share the address h holds, or "".
func (h *holder) refuses(s Service) string {
	who := h.who[0]
	switch {
	case h.key == "" || s.SharingKey != h.key:
		return fmt.Sprintf("it is held by %s; to share it, give both the same %s annotation", who, api.SharingKeyAnnotation)
	case h.local != s.Local:
		return fmt.Sprintf("%s shares it with another externalTrafficPolicy: sharing needs the same policy", who)
	case h.local && h.selector != s.Selector:
		return fmt.Sprintf("%s shares it with externalTrafficPolicy Local and another selector: Local sharing needs the same pods", who)
	}
	for _, p := range s.Ports {
		if h.ports[p] {
			return fmt.Sprintf("port %s is already served on it by %s", p, who)
		}
	}
	return ""
}
