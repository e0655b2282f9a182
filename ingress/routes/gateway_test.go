package routes

import (
	"net/http"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

func gwClass() *gatewayv1.GatewayClass {
	return &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "skiff"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: GatewayController}}
}

func gateway(name string, ls ...gatewayv1.Listener) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: name, Generation: 1,
			Annotations: map[string]string{AddressAnnotation: OnNodes}},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "skiff", Listeners: ls},
	}
}

func httpListener(name string, host string, from gatewayv1.FromNamespaces) gatewayv1.Listener {
	l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: 80, Protocol: gatewayv1.HTTPProtocolType,
		AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &from}}}
	if host != "" {
		h := gatewayv1.Hostname(host)
		l.Hostname = &h
	}
	return l
}

func httpRoute(name string, hosts []gatewayv1.Hostname, rules ...gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
	ns := gatewayv1.Namespace("infra")
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Generation: 2},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw", Namespace: &ns}}},
			Hostnames:       hosts,
			Rules:           rules,
		},
	}
}

func backendRef(svc string, weight int32) gatewayv1.HTTPBackendRef {
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(svc), Port: ptr[gatewayv1.PortNumber](80)},
		Weight:                 &weight,
	}}
}

func pathMatch(t gatewayv1.PathMatchType, v string) gatewayv1.HTTPRouteMatch {
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: &t, Value: &v}}
}

func conditionOf(cs []metav1.Condition, typ string) string {
	for _, c := range cs {
		if c.Type == typ {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return "missing"
}

func TestGatewayRouting(t *testing.T) {
	hdr := gatewayv1.HTTPRouteMatch{Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x-version", Value: "v2"}}}
	post := gatewayv1.HTTPRouteMatch{Method: ptr(gatewayv1.HTTPMethodPost)}
	query := gatewayv1.HTTPRouteMatch{QueryParams: []gatewayv1.HTTPQueryParamMatch{{Name: "canary", Value: "yes"}}}
	in := Input{Gateway: &GatewayInput{
		Classes:  []*gatewayv1.GatewayClass{gwClass()},
		Gateways: []*gatewayv1.Gateway{gateway("gw", httpListener("http", "*.example.com", gatewayv1.NamespacesFromAll))},
		HTTPRoutes: []*gatewayv1.HTTPRoute{
			httpRoute("main", []gatewayv1.Hostname{"app.example.com", "other.org"},
				gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchPathPrefix, "/")}, BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("v1", 1)}},
				gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{hdr, post, query}, BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("v2", 1)}},
				gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchExact, "/exact")}, BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("exact", 1)}},
				gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchRegularExpression, "/re/[0-9]+")}, BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("re", 1)}},
			),
			httpRoute("wild", []gatewayv1.Hostname{"*.example.com"},
				gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("wild", 1)}}),
		},
	}}
	withServices(&in, "v1", "v2", "exact", "re", "wild")
	res := Build(in)
	cases := []struct {
		r    *http.Request
		want string
	}{
		{req("GET", "app.example.com", "/x"), "default/v1:80"},
		{req("GET", "app.example.com", "/x", "X-Version", "v2"), "default/v2:80"},
		{req("POST", "app.example.com", "/x"), "default/v2:80"},
		{req("GET", "app.example.com", "/x?canary=yes"), "default/v2:80"},
		{req("GET", "app.example.com", "/exact", "X-Version", "v2"), "default/exact:80"}, // Exact path beats headers
		{req("GET", "app.example.com", "/re/42"), "default/re:80"},
		{req("GET", "app.example.com", "/re/x"), "default/v1:80"},
		{req("GET", "a.b.example.com", "/"), "default/wild:80"}, // Gateway wildcards match any depth
		{req("GET", "other.org", "/"), "404"},                   // outside the listener's hostname
		{req("GET", "example.com", "/"), "404"},
	}
	for _, c := range cases {
		if got := backendOf(res.Table, HTTP, c.r); got != c.want {
			t.Errorf("%s %s%s %v: %q, want %q", c.r.Method, c.r.Host, c.r.URL, c.r.Header, got, c.want)
		}
		if got := backendOf(res.Table, HTTPS, c.r); got != "404" {
			t.Errorf("HTTPS %s%s: %q; the Gateway has no HTTPS listener", c.r.Host, c.r.URL, got)
		}
	}
	st := res.Gateway
	if got := conditionOf(st.Classes["skiff"], "Accepted"); got != "True/Accepted" {
		t.Errorf("GatewayClass Accepted = %s", got)
	}
	gs := st.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]
	if got := conditionOf(gs.Conditions, "Programmed"); got != "True/Programmed" {
		t.Errorf("Gateway Programmed = %s", got)
	}
	if gs.Listeners[0].AttachedRoutes != 2 {
		t.Errorf("attached routes = %d, want 2", gs.Listeners[0].AttachedRoutes)
	}
	ps := st.Routes[types.NamespacedName{Namespace: "default", Name: "main"}]
	if len(ps) != 1 || conditionOf(ps[0].Conditions, "Accepted") != "True/Accepted" || conditionOf(ps[0].Conditions, "ResolvedRefs") != "True/ResolvedRefs" {
		t.Errorf("route status = %+v", ps)
	}
	if ps[0].Conditions[0].ObservedGeneration != 2 {
		t.Errorf("observedGeneration = %d, want the route's 2", ps[0].Conditions[0].ObservedGeneration)
	}
}

func TestGatewayStatusProblems(t *testing.T) {
	sameNS := httpListener("same", "", gatewayv1.NamespacesFromSame)
	tcp := gatewayv1.Listener{Name: "tcp", Port: 9000, Protocol: gatewayv1.TCPProtocolType}
	badPort := gatewayv1.Listener{Name: "http8080", Port: 8080, Protocol: gatewayv1.HTTPProtocolType}
	https := gatewayv1.Listener{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{
		CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "cert", Namespace: ptr(gatewayv1.Namespace("certs"))}}}}
	other := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/other"}}
	foreign := gateway("foreign", httpListener("http", "", gatewayv1.NamespacesFromAll))
	foreign.Spec.GatewayClassName = "other"

	crossNS := httpRoute("cross", nil, gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("v1", 1)}})
	crossNS.Spec.Rules[0].BackendRefs[0].Namespace = ptr(gatewayv1.Namespace("elsewhere"))
	missing := httpRoute("missing", nil, gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("nope", 1)}})
	in := Input{
		Secrets: []*corev1.Secret{func() *corev1.Secret {
			s := tlsSecret(t, "cert", "secure.example.com")
			s.Namespace = "certs"
			return s
		}()},
		Gateway: &GatewayInput{
			Classes:    []*gatewayv1.GatewayClass{gwClass(), other},
			Gateways:   []*gatewayv1.Gateway{gateway("gw", sameNS, tcp, badPort, https), foreign},
			HTTPRoutes: []*gatewayv1.HTTPRoute{crossNS, missing},
		},
	}
	withServices(&in, "v1")
	res := Build(in)
	st := res.Gateway
	if _, ok := st.Classes["other"]; ok {
		t.Errorf("status computed for another controller's GatewayClass")
	}
	if _, ok := st.Gateways[types.NamespacedName{Namespace: "infra", Name: "foreign"}]; ok {
		t.Errorf("status computed for another controller's Gateway")
	}
	gs := st.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]
	want := map[string][2]string{
		"same":     {"True/Accepted", "True/Programmed"},
		"tcp":      {"False/UnsupportedProtocol", "False/Invalid"},
		"http8080": {"False/PortUnavailable", "False/Invalid"},
		"https":    {"True/Accepted", "False/Invalid"}, // Secret in another namespace without a grant
	}
	for _, l := range gs.Listeners {
		w := want[string(l.Name)]
		if a, p := conditionOf(l.Conditions, "Accepted"), conditionOf(l.Conditions, "Programmed"); a != w[0] || p != w[1] {
			t.Errorf("listener %s: Accepted %s Programmed %s, want %s %s", l.Name, a, p, w[0], w[1])
		}
	}
	if got := conditionOf(gs.Listeners[3].Conditions, "ResolvedRefs"); got != "False/RefNotPermitted" {
		t.Errorf("https ResolvedRefs = %s, want False/RefNotPermitted", got)
	}
	if got := conditionOf(gs.Conditions, "Accepted"); got != "True/ListenersNotValid" {
		t.Errorf("Gateway Accepted = %s", got)
	}
	// Routes in "default" may not attach to a From: Same listener in "infra".
	for _, name := range []string{"cross", "missing"} {
		ps := st.Routes[types.NamespacedName{Namespace: "default", Name: name}]
		if len(ps) != 1 || conditionOf(ps[0].Conditions, "Accepted") != "False/NotAllowedByListeners" {
			t.Errorf("%s: parents %+v, want Accepted False/NotAllowedByListeners", name, ps)
		}
	}
	ps := st.Routes[types.NamespacedName{Namespace: "default", Name: "cross"}]
	if got := conditionOf(ps[0].Conditions, "ResolvedRefs"); got != "False/RefNotPermitted" {
		t.Errorf("cross-namespace backend ResolvedRefs = %s", got)
	}
	ps = st.Routes[types.NamespacedName{Namespace: "default", Name: "missing"}]
	if got := conditionOf(ps[0].Conditions, "ResolvedRefs"); got != "False/BackendNotFound" {
		t.Errorf("missing backend ResolvedRefs = %s", got)
	}

	// With ReferenceGrants, the certificate and the Service resolve.
	in.Gateway.ReferenceGrants = []*gatewayv1beta1.ReferenceGrant{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "certs", Name: "g"}, Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: "infra"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Kind: "Secret"}}}},
	}
	res = Build(in)
	gs = res.Gateway.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]
	if got := conditionOf(gs.Listeners[3].Conditions, "Programmed"); got != "True/Programmed" {
		t.Errorf("https listener with a grant: Programmed = %s", got)
	}
	if crt := res.Table.Certificate("secure.example.com"); crt == nil || crt.Leaf.DNSNames[0] != "secure.example.com" {
		t.Errorf("listener certificate not served")
	}
}

func TestGatewayWeightsAndFilters(t *testing.T) {
	set := gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{
		Set: []gatewayv1.HTTPHeader{{Name: "x-set", Value: "1"}}, Add: []gatewayv1.HTTPHeader{{Name: "x-add", Value: "2"}}, Remove: []string{"x-drop"}}}
	redirect := gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{
		Scheme: ptr("https"), StatusCode: ptr(301)}}
	bad := backendRef("v1", 0)
	bad.Kind = ptr(gatewayv1.Kind("Bucket"))
	in := Input{Gateway: &GatewayInput{
		Classes:  []*gatewayv1.GatewayClass{gwClass()},
		Gateways: []*gatewayv1.Gateway{gateway("gw", httpListener("http", "", gatewayv1.NamespacesFromAll))},
		HTTPRoutes: []*gatewayv1.HTTPRoute{httpRoute("r", nil,
			gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchPathPrefix, "/split")},
				Filters: []gatewayv1.HTTPRouteFilter{set}, BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("v1", 90), backendRef("v2", 10), bad}},
			gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchPathPrefix, "/old")},
				Filters: []gatewayv1.HTTPRouteFilter{redirect}},
			gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchPathPrefix, "/none")}},
		)},
	}}
	withServices(&in, "v1", "v2")
	res := Build(in)
	rt := res.Table.Match(HTTP, netip.Addr{}, req("GET", "h", "/split/x"))
	if rt == nil || len(rt.Backends) != 3 || rt.Filters.RequestHeaders == nil {
		t.Fatalf("split route = %+v", rt)
	}
	if rt.Backends[2].Status != http.StatusInternalServerError {
		t.Errorf("invalid backendRef kind: status %d, want 500", rt.Backends[2].Status)
	}
	h := http.Header{"X-Set": {"old"}, "X-Add": {"0"}, "X-Drop": {"x"}}
	rt.Filters.RequestHeaders.Apply(h)
	if h.Get("X-Set") != "1" || len(h["X-Add"]) != 2 || h.Get("X-Drop") != "" {
		t.Errorf("headers after modifier: %v", h)
	}
	counts := map[string]int{}
	for i := 0; i < 2000; i++ {
		counts[rt.Pick().Name]++
	}
	if counts["default/v2:80"] < 140 || counts["default/v2:80"] > 260 {
		t.Errorf("90/10 split over 2000 picks: %v", counts)
	}
	if rd := res.Table.Match(HTTP, netip.Addr{}, req("GET", "h", "/old")); rd == nil || rd.Filters.Redirect == nil || rd.Filters.Redirect.Status != 301 {
		t.Errorf("redirect route = %+v", rd)
	}
	if none := res.Table.Match(HTTP, netip.Addr{}, req("GET", "h", "/none")); none == nil || none.Pick() != nil {
		t.Errorf("a rule without backendRefs must have nothing to pick (the proxy answers 500)")
	}
}

// TestGatewayAddresses: Gateways with an address of their own serve only
// their routes there, and the nodes' addresses serve only the rest.
func TestGatewayAddresses(t *testing.T) {
	a, b := gateway("a", httpListener("http", "", gatewayv1.NamespacesFromAll)), gateway("b", httpListener("http", "", gatewayv1.NamespacesFromAll))
	a.Annotations = map[string]string{AddressAnnotation: "10.250.0.1"}
	ipType := gatewayv1.IPAddressType
	b.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Type: &ipType, Value: "10.250.0.9"}}
	shared := gateway("shared", httpListener("http", "", gatewayv1.NamespacesFromAll))
	bad := gateway("bad", httpListener("http", "", gatewayv1.NamespacesFromAll))
	bad.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "not-an-ip"}}
	route := func(name, gw, path, svc string) *gatewayv1.HTTPRoute {
		r := httpRoute(name, nil, gatewayv1.HTTPRouteRule{
			Matches:     []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchPathPrefix, path)},
			BackendRefs: []gatewayv1.HTTPBackendRef{backendRef(svc, 1)},
		})
		r.Spec.ParentRefs[0].Name = gatewayv1.ObjectName(gw)
		return r
	}
	in := Input{Gateway: &GatewayInput{
		Classes:  []*gatewayv1.GatewayClass{gwClass()},
		Gateways: []*gatewayv1.Gateway{a, b, shared, bad},
		HTTPRoutes: []*gatewayv1.HTTPRoute{
			route("ra", "a", "/", "va"), route("rb", "b", "/", "vb"), route("rs", "shared", "/s", "vs"),
		},
	}}
	withServices(&in, "va", "vb", "vs")
	res := Build(in)
	at := func(addr string, path string) string {
		rt := res.Table.Match(HTTP, netip.MustParseAddr(addr), req("GET", "h", path))
		if rt == nil || len(rt.Backends) == 0 {
			return "404"
		}
		return rt.Backends[0].Name
	}
	for _, c := range []struct{ addr, path, want string }{
		{"10.250.0.1", "/x", "default/va:80"},
		{"10.250.0.9", "/x", "default/vb:80"},
		{"::ffff:10.250.0.9", "/x", "default/vb:80"}, // an IPv4 client on a dual-stack socket
		{"10.250.0.1", "/s", "default/va:80"},        // the shared Gateway's route is not here
		{"172.30.0.11", "/s", "default/vs:80"},       // a node address
		{"172.30.0.11", "/x", "404"},
	} {
		if got := at(c.addr, c.path); got != c.want {
			t.Errorf("GET %s%s: %s, want %s", c.addr, c.path, got, c.want)
		}
	}
	if got := res.Table.GatewayAddresses(); len(got) != 2 || got[0].String() != "10.250.0.1" || got[1].String() != "10.250.0.9" {
		t.Errorf("GatewayAddresses() = %v, want [10.250.0.1 10.250.0.9]", got)
	}
	st := res.Gateway.Gateways
	if got := st[types.NamespacedName{Namespace: "infra", Name: "a"}].Addresses; len(got) != 1 || got[0].Value != "10.250.0.1" {
		t.Errorf("gateway a status addresses %v, want 10.250.0.1", got)
	}
	if got := st[types.NamespacedName{Namespace: "infra", Name: "shared"}].Addresses; len(got) != 0 {
		t.Errorf("gateway shared status addresses %v, want none (the writer fills in node addresses)", got)
	}
	if got := conditionOf(st[types.NamespacedName{Namespace: "infra", Name: "bad"}].Conditions, string(gatewayv1.GatewayConditionAccepted)); got != "False/UnsupportedAddress" {
		t.Errorf("gateway bad Accepted = %s, want False/UnsupportedAddress", got)
	}
}

func TestRuleTimeouts(t *testing.T) {
	d := func(s string) *gatewayv1.Duration { v := gatewayv1.Duration(s); return &v }
	for _, c := range []struct {
		in      *gatewayv1.HTTPRouteTimeouts
		want    Timeouts
		wantErr bool
	}{
		{nil, Timeouts{}, false},
		{&gatewayv1.HTTPRouteTimeouts{Request: d("10s"), BackendRequest: d("500ms")}, Timeouts{10 * time.Second, 500 * time.Millisecond}, false},
		{&gatewayv1.HTTPRouteTimeouts{Request: d("0s")}, Timeouts{}, false},
		{&gatewayv1.HTTPRouteTimeouts{Request: d("ten seconds")}, Timeouts{}, true},
	} {
		got, err := compileTimeouts(c.in)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("compileTimeouts(%+v) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.wantErr)
		}
	}
}
