// Package gatewayaddr gives each Gateway of class skiff an address of its
// own, so Gateways with identical listeners keep their routes apart: the
// server's Allocator hands out addresses from the --gateway-cidr pool (or
// honours spec.addresses), and every agent's Local makes them local to its
// node, where the proxy tells Gateways apart by the address a connection
// arrived on.
package gatewayaddr
