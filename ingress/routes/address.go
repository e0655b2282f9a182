package routes

import (
	"fmt"
	"net/netip"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// AddressAnnotation holds the address the server's allocator gave a
// Gateway from a LoadBalancerPool that serves Gateways (--gateway-cidr
// makes one). Agents make it local on every node, one node announces it
// by ARP, and the proxy serves only that Gateway's routes on it.
const AddressAnnotation = "skiff.io/gateway-address"

// OnNodes is AddressAnnotation's value for a Gateway the allocator gave no
// address of its own (no pool serves Gateways, or none has one free): it
// is served on the nodes' addresses. Until the allocator has written
// either, the Gateway's address is not known yet, and the proxies do not
// report one: reporting the nodes' addresses first and the pool address
// a moment later sent clients (the conformance suite among them) to
// addresses that stop serving the Gateway's routes.
const OnNodes = "nodes"

// AddressPending reports whether the allocator has not yet decided where
// gw is served.
func AddressPending(gw *gatewayv1.Gateway) bool {
	_, decided := gw.Annotations[AddressAnnotation]
	return len(gw.Spec.Addresses) == 0 && !decided
}

// GatewayAddress returns the address a Gateway is served on: the first
// IPAddress of spec.addresses (the user's request) or the allocated one in
// AddressAnnotation. ok is false when the Gateway has none, and it is then
// served on the nodes' own addresses. err explains a spec.addresses entry
// Skiff cannot honour.
func GatewayAddress(gw *gatewayv1.Gateway) (addr netip.Addr, ok bool, err error) {
	for i, a := range gw.Spec.Addresses {
		if a.Type != nil && *a.Type != gatewayv1.IPAddressType {
			return netip.Addr{}, false, fmt.Errorf("spec.addresses[%d]: type %s is not supported; use IPAddress", i, *a.Type)
		}
		ip, perr := netip.ParseAddr(a.Value)
		if perr != nil {
			return netip.Addr{}, false, fmt.Errorf("spec.addresses[%d]: %q is not an IP address", i, a.Value)
		}
		return ip.Unmap(), true, nil
	}
	if v := gw.Annotations[AddressAnnotation]; v != "" && v != OnNodes {
		ip, perr := netip.ParseAddr(v)
		if perr != nil {
			return netip.Addr{}, false, fmt.Errorf("annotation %s: %q is not an IP address; delete the annotation and the server allocates a new one", AddressAnnotation, v)
		}
		return ip.Unmap(), true, nil
	}
	return netip.Addr{}, false, nil
}
