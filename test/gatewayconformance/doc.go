// Package gatewayconformance runs the Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, GATEWAY-HTTP profile) against a
// multi-node test cluster of test/cluster, with the suite's echo-basic
// backend built from the conformance module's own Go code. See
// TestGatewayConformance.
package gatewayconformance
