package routes

import (
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestListenerAttachedRoutes follows the conformance tests
// GatewayModifyListeners, GatewayWithAttachedRoutes and
// HTTPRouteHostnameIntersection: every listener a route attaches to counts
// it, and a listener whose certificate does not resolve still counts the
// routes attached to it while serving none of them.
func TestListenerAttachedRoutes(t *testing.T) {
	all := gatewayv1.NamespacesFromAll
	https := func(name, host, secret string) gatewayv1.Listener {
		return gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: 443, Protocol: gatewayv1.HTTPSProtocolType,
			Hostname:      ptr(gatewayv1.Hostname(host)),
			AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}},
			TLS:           &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(secret)}}}}
	}
	multi := gateway("multi", https("https", "secure.test.com", "cert"), httpListener("http", "data.test.com", all),
		httpListener("http-any", "", all))
	broken := gateway("gw", https("tls", "broken.test.com", "does-not-exist"))
	cert := tlsSecret(t, "cert", "secure.test.com")
	cert.Namespace = "infra"

	both := httpRoute("both", nil, gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("v1", 1)}})
	both.Spec.ParentRefs[0].Name = "multi"
	unresolved := httpRoute("unresolved", nil, gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("v1", 1)}})
	in := Input{Secrets: []*corev1.Secret{cert}, Gateway: &GatewayInput{
		Classes:    []*gatewayv1.GatewayClass{gwClass()},
		Gateways:   []*gatewayv1.Gateway{multi, broken},
		HTTPRoutes: []*gatewayv1.HTTPRoute{both, unresolved},
	}}
	withServices(&in, "v1")
	res := Build(in)

	gs := res.Gateway.Gateways[types.NamespacedName{Namespace: "infra", Name: "multi"}]
	for _, l := range gs.Listeners {
		if l.AttachedRoutes != 1 || conditionOf(l.Conditions, "Programmed") != "True/Programmed" {
			t.Errorf("listener %s of multi: attachedRoutes %d, Programmed %s; want 1 and True/Programmed",
				l.Name, l.AttachedRoutes, conditionOf(l.Conditions, "Programmed"))
		}
	}
	if got := backendOf(res.Table, HTTPS, req(http.MethodGet, "secure.test.com", "/")); got == "404" {
		t.Errorf("route on the HTTPS listener of multi not served: %s", got)
	}

	gs = res.Gateway.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]
	l := gs.Listeners[0]
	if l.AttachedRoutes != 1 || conditionOf(l.Conditions, "ResolvedRefs") != "False/InvalidCertificateRef" ||
		conditionOf(l.Conditions, "Programmed") != "False/Invalid" {
		t.Errorf("listener with a missing certificate: attachedRoutes %d, conditions %+v; want 1, ResolvedRefs and Programmed False",
			l.AttachedRoutes, l.Conditions)
	}
	ps := res.Gateway.Routes[types.NamespacedName{Namespace: "default", Name: "unresolved"}]
	if len(ps) != 1 || conditionOf(ps[0].Conditions, "Accepted") != "True/Accepted" {
		t.Errorf("route on a listener with a missing certificate: %+v, want Accepted", ps)
	}
	if got := backendOf(res.Table, HTTPS, req(http.MethodGet, "broken.test.com", "/")); got != "404" {
		t.Errorf("an unprogrammed listener served a route: %s", got)
	}
}

// TestGatewayAcceptedNeedsAListener is the conformance test
// GatewayListenerUnsupportedProtocol: a Gateway none of whose listeners is
// accepted is not accepted either; with one it is, reporting the others.
func TestGatewayAcceptedNeedsAListener(t *testing.T) {
	tcp := gatewayv1.Listener{Name: "tcp", Port: 80, Protocol: gatewayv1.TCPProtocolType}
	in := Input{Gateway: &GatewayInput{
		Classes: []*gatewayv1.GatewayClass{gwClass()},
		Gateways: []*gatewayv1.Gateway{gateway("none", tcp),
			gateway("some", tcp, httpListener("http", "", gatewayv1.NamespacesFromSame))},
	}}
	st := Build(in).Gateway
	for name, want := range map[string]string{"none": "False/ListenersNotValid", "some": "True/ListenersNotValid"} {
		gs := st.Gateways[types.NamespacedName{Namespace: "infra", Name: name}]
		if got := conditionOf(gs.Conditions, "Accepted"); got != want {
			t.Errorf("Gateway %s: Accepted %s, want %s", name, got, want)
		}
		if got := conditionOf(gs.Listeners[0].Conditions, "Accepted"); got != "False/UnsupportedProtocol" {
			t.Errorf("Gateway %s, TCP listener: Accepted %s, want False/UnsupportedProtocol", name, got)
		}
	}
}
