// Package gatewayaddr makes Gateway addresses local to a node: every
// agent's Local adds a local route for each address the server's
// allocator (loadbalancer/controller, from the pools that serve Gateways)
// gave a Gateway, so the node's proxy accepts connections to it and tells
// Gateways apart by the address a connection arrived on. Which node the
// clients reach is decided by the L2 announcer (loadbalancer/announce),
// which also keeps the kernels from answering ARP for these addresses.
package gatewayaddr
