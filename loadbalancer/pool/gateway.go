package pool

import (
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffnet/skiff/ingress/routes"
)

// FromGateway reads what the allocator needs from a Gateway of a class
// Skiff serves. spec.addresses is the requested address; the annotation
// routes.AddressAnnotation is the address it holds (the allocator
// writes it, and a user who sets it to a free address of a pool serving
// Gateways keeps it).
func FromGateway(gw *gatewayv1.Gateway) Service {
	s := Service{
		Name:    types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name},
		Gateway: true,
		Created: gw.CreationTimestamp.Time,
		Labels:  labels.Set(gw.Labels),
	}
	if a, err := netip.ParseAddr(gw.Annotations[routes.AddressAnnotation]); err == nil && a.Is4() {
		s.Current = []netip.Addr{a}
	}
	s.Requested, s.RequestErr = gatewayRequest(gw)
	return s
}

func gatewayRequest(gw *gatewayv1.Gateway) (netip.Addr, error) {
	if len(gw.Spec.Addresses) == 0 {
		return netip.Addr{}, nil
	}
	if len(gw.Spec.Addresses) > 1 {
		return netip.Addr{}, fmt.Errorf("spec.addresses lists %d addresses: Skiff gives a Gateway one IPv4 address, so list one", len(gw.Spec.Addresses))
	}
	a := gw.Spec.Addresses[0]
	if a.Type != nil && *a.Type != gatewayv1.IPAddressType {
		return netip.Addr{}, fmt.Errorf("spec.addresses[0]: type %s is not supported; use IPAddress", *a.Type)
	}
	ip, err := netip.ParseAddr(a.Value)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("spec.addresses[0]: %q is not an IP address", a.Value)
	case !ip.Unmap().Is4():
		return netip.Addr{}, fmt.Errorf("spec.addresses[0]: %s: IPv6 addresses are not supported until Skiff is dual-stack", ip)
	}
	return ip.Unmap(), nil
}
