package routes

import (
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	exact  = networkingv1.PathTypeExact
	prefix = networkingv1.PathTypePrefix
	implsp = networkingv1.PathTypeImplementationSpecific
)

type routeCase struct {
	host, target string
	want         string // backend name, "404" for no route
}

func checkRoutes(t *testing.T, tab *Table, cases []routeCase) {
	t.Helper()
	for _, c := range cases {
		for _, l := range []Listener{HTTP, HTTPS} {
			if got := backendOf(tab, l, req("GET", c.host, c.target)); got != c.want {
				t.Errorf("%s %s%s: routed to %q, want %q", l, c.host, c.target, got, c.want)
			}
		}
	}
}

func TestIngressHosts(t *testing.T) {
	in := Input{Ingresses: []*networkingv1.Ingress{
		newIngress("hosts",
			rule("foo.example.com", pth(prefix, "/", "exact")),
			rule("*.example.com", pth(prefix, "/", "wild")),
			rule("*.deep.example.com", pth(prefix, "/", "deepwild")),
			rule("", pth(prefix, "/any", "any")),
		),
	}}
	withServices(&in, "exact", "wild", "deepwild", "any")
	tab := Build(in).Table
	checkRoutes(t, tab, []routeCase{
		{"foo.example.com", "/", "default/exact:80"},
		{"FOO.Example.COM:8080", "/x", "default/exact:80"}, // case and port do not matter
		{"foo.example.com.", "/", "default/exact:80"},      // nor a trailing dot
		{"bar.example.com", "/", "default/wild:80"},
		{"x.deep.example.com", "/", "default/deepwild:80"}, // longest wildcard wins
		{"a.b.example.com", "/any", "default/any:80"},      // *. covers one label only
		{"example.com", "/any", "default/any:80"},          // and not the bare domain
		{"other.org", "/any/thing", "default/any:80"},
		{"other.org", "/", "404"},
		{"", "/any", "default/any:80"}, // HTTP/1.0 without Host
		// a claimed host does not fall through to the any-host rules
		{"foo.example.com", "/any", "default/exact:80"},
	})
}

func TestIngressPaths(t *testing.T) {
	in := Input{Ingresses: []*networkingv1.Ingress{
		newIngress("paths", rule("h",
			pth(prefix, "/foo", "foo"),
			pth(prefix, "/foo/bar/", "foobar"), // trailing slash ignored
			pth(exact, "/foo/bar", "exactfoobar"),
			pth(exact, "/exact", "exact"),
			pth(implsp, "/impl", "impl"),
			pth(prefix, "/", "root"),
		)),
	}}
	withServices(&in, "foo", "foobar", "exactfoobar", "exact", "impl", "root")
	tab := Build(in).Table
	checkRoutes(t, tab, []routeCase{
		{"h", "/foo", "default/foo:80"},
		{"h", "/foo/", "default/foo:80"},
		{"h", "/foo/x", "default/foo:80"},
		{"h", "/foobar", "default/root:80"}, // element-wise, not string prefix
		{"h", "/foo/bar", "default/exactfoobar:80"},
		{"h", "/foo/bar/", "default/foobar:80"},
		{"h", "/foo/bar/baz", "default/foobar:80"},
		{"h", "/foo/barbaz", "default/foo:80"},
		{"h", "/exact", "default/exact:80"},
		{"h", "/exact/", "default/root:80"}, // Exact does not match a trailing slash
		{"h", "/exact/x", "default/root:80"},
		{"h", "/EXACT", "default/root:80"},  // paths are case-sensitive
		{"h", "/impl/a", "default/impl:80"}, // ImplementationSpecific is Prefix
		{"h", "/impla", "default/root:80"},
		{"h", "/", "default/root:80"},
		{"h", "/foo/../exact", "default/exact:80"}, // dot segments resolved before matching
		{"h", "//foo//x", "default/foo:80"},
		{"h", "/foo?x=1", "default/foo:80"},
	})
}

// Equal paths: Exact beats Prefix; between Ingresses the oldest wins, then
// namespace/name.
func TestIngressPrecedence(t *testing.T) {
	in := Input{Ingresses: []*networkingv1.Ingress{
		newIngress("b-young", created(2), rule("h", pth(prefix, "/p", "young"))),
		newIngress("a-old", created(1), rule("h", pth(prefix, "/p", "old"))),
		newIngress("c-prefix", rule("h", pth(prefix, "/e", "prefix"))),
		newIngress("d-exact", created(5), rule("h", pth(exact, "/e", "exact"))),
		newIngress("b-same", created(3), rule("h", pth(prefix, "/s", "b"))),
		newIngress("a-same", created(3), rule("h", pth(prefix, "/s", "a"))),
	}}
	withServices(&in, "young", "old", "prefix", "exact", "a", "b")
	tab := Build(in).Table
	checkRoutes(t, tab, []routeCase{
		{"h", "/p", "default/old:80"},
		{"h", "/e", "default/exact:80"},
		{"h", "/e/x", "default/prefix:80"},
		{"h", "/s", "default/a:80"},
	})
}

func TestIngressClass(t *testing.T) {
	skiffDefault := &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: "skiff", Annotations: map[string]string{AnnotationDefaultClass: "true"}},
		Spec:       networkingv1.IngressClassSpec{Controller: Controller},
	}
	skiffAlias := &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: "public"},
		Spec:       networkingv1.IngressClassSpec{Controller: Controller},
	}
	nginxDefault := &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx", Annotations: map[string]string{AnnotationDefaultClass: "true"}},
		Spec:       networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"},
	}
	legacy := func(c string) ingOpt {
		return func(i *networkingv1.Ingress) {
			i.Spec.IngressClassName = nil
			i.Annotations = map[string]string{AnnotationLegacyClass: c}
		}
	}
	cases := []struct {
		name    string
		classes []*networkingv1.IngressClass
		opt     ingOpt
		served  bool
	}{
		{"skiff by name without IngressClass object", nil, class(ptr("skiff")), true},
		{"other class", []*networkingv1.IngressClass{nginxDefault}, class(ptr("nginx")), false},
		{"class of our controller by another name", []*networkingv1.IngressClass{skiffAlias}, class(ptr("public")), true},
		{"no class, skiff is default", []*networkingv1.IngressClass{skiffDefault}, class(nil), true},
		{"no class, another is default", []*networkingv1.IngressClass{nginxDefault}, class(nil), false},
		{"no class, no default", []*networkingv1.IngressClass{skiffAlias}, class(nil), false},
		{"legacy annotation skiff", nil, legacy("skiff"), true},
		{"legacy annotation other", []*networkingv1.IngressClass{skiffDefault}, legacy("nginx"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := Input{
				IngressClasses: c.classes,
				Ingresses:      []*networkingv1.Ingress{newIngress("x", c.opt, rule("h", pth(prefix, "/", "s")))},
			}
			withServices(&in, "s")
			res := Build(in)
			got := backendOf(res.Table, HTTP, req("GET", "h", "/")) == "default/s:80"
			if got != c.served || (len(res.Ingresses) == 1) != c.served {
				t.Fatalf("served = %v (status for %d ingresses), want %v", got, len(res.Ingresses), c.served)
			}
		})
	}
}

func TestIngressDefaultBackend(t *testing.T) {
	in := Input{Ingresses: []*networkingv1.Ingress{
		newIngress("second", created(2), defaultBackend("second")),
		newIngress("first", created(1), defaultBackend("first"), rule("h", pth(exact, "/x", "x"))),
	}}
	withServices(&in, "first", "second", "x")
	res := Build(in)
	checkRoutes(t, res.Table, []routeCase{
		{"h", "/x", "default/x:80"},
		{"h", "/y", "default/first:80"}, // unmatched path on a known host
		{"other", "/", "default/first:80"},
	})
	if len(res.Problems) != 1 || !strings.Contains(res.Problems[0].String(), "ingress/default/second") {
		t.Errorf("problems = %v, want the second default backend reported", res.Problems)
	}
}

func TestIngressBackends(t *testing.T) {
	svc, es := service("web")
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "grpc", Port: 9000, AppProtocol: ptr(AppProtocolH2C)})
	es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr("grpc"), Port: ptr[int32](9090)})
	cond := func(ready, serving, terminating bool) discoveryv1.EndpointConditions {
		return discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
	}
	es.Endpoints = []discoveryv1.Endpoint{
		{Addresses: []string{"10.0.0.2"}, Conditions: cond(true, true, false)},
		{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{}}, // nil Ready means ready
		{Addresses: []string{"10.0.0.3"}, Conditions: cond(false, false, false)},        // not ready
		{Addresses: []string{"10.0.0.4"}, Conditions: cond(false, true, true)},          // terminating
	}
	es2 := es.DeepCopy()
	es2.Name = "web-v6"
	es2.AddressType = discoveryv1.AddressTypeIPv6
	es2.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"fd00::1"}}}
	// a duplicate slice (as during EndpointSlice controller handover)
	es3 := es.DeepCopy()
	es3.Name = "web-dup"
	fqdn := es.DeepCopy()
	fqdn.Name = "web-fqdn"
	fqdn.AddressType = discoveryv1.AddressTypeFQDN
	fqdn.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"example.org"}}}

	draining, des := service("draining")
	des.Endpoints = []discoveryv1.Endpoint{
		{Addresses: []string{"10.1.0.1"}, Conditions: cond(false, true, true)},
		{Addresses: []string{"10.1.0.2"}, Conditions: cond(false, false, true)},
	}
	ext := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "api.example.org", Ports: []corev1.ServicePort{{Port: 443}}},
	}
	named := func(svc, port string) networkingv1.HTTPIngressPath {
		return networkingv1.HTTPIngressPath{Path: "/" + svc + "-" + port, PathType: ptr(prefix), Backend: networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Name: port}}}}
	}
	numbered := func(svc string, port int32) networkingv1.HTTPIngressPath {
		p := pth(prefix, "/"+svc+"-"+itoa(int(port)), svc)
		p.Backend.Service.Port.Number = port
		return p
	}
	in := Input{
		Services:       []*corev1.Service{svc, draining, ext},
		EndpointSlices: []*discoveryv1.EndpointSlice{es, es2, es3, fqdn, des},
		Ingresses: []*networkingv1.Ingress{newIngress("b", rule("h",
			numbered("web", 80), named("web", "http"), named("web", "grpc"), numbered("web", 9000),
			named("draining", "http"), numbered("ext", 443),
			numbered("missing", 80), numbered("web", 81), named("web", "nope"),
		), rule("other", pth(prefix, "/again", "web")))},
	}
	res := Build(in)
	cases := []struct {
		target    string
		name      string
		endpoints []string
		proto     Protocol
		status    int
	}{
		{"/web-80", "default/web:80", []string{"10.0.0.1:8080", "10.0.0.2:8080", "[fd00::1]:8080"}, HTTP1, 0},
		{"/web-http", "default/web:http", []string{"10.0.0.1:8080", "10.0.0.2:8080", "[fd00::1]:8080"}, HTTP1, 0},
		{"/web-grpc", "default/web:grpc", []string{"10.0.0.1:9090", "10.0.0.2:9090", "[fd00::1]:9090"}, H2C, 0},
		{"/web-9000", "default/web:9000", []string{"10.0.0.1:9090", "10.0.0.2:9090", "[fd00::1]:9090"}, H2C, 0},
		// no ready endpoint: the serving, terminating ones take the traffic
		{"/draining-http", "default/draining:http", []string{"10.1.0.1:8080"}, HTTP1, 0},
		{"/ext-443", "default/ext:443", []string{"api.example.org:443"}, HTTP1, 0},
		{"/missing-80", "default/missing:80", nil, HTTP1, 503},
		{"/web-81", "default/web:81", nil, HTTP1, 503},
		{"/web-nope", "default/web:nope", nil, HTTP1, 503},
	}
	for _, c := range cases {
		rt := res.Table.Match(HTTP, netip.Addr{}, req("GET", "h", c.target))
		if rt == nil || len(rt.Backends) != 1 {
			t.Fatalf("%s: route %+v, want one backend", c.target, rt)
		}
		be := rt.Backends[0]
		if be.Name != c.name || !reflect.DeepEqual(be.Endpoints, c.endpoints) || be.Protocol != c.proto || be.Status != c.status {
			t.Errorf("%s: backend %s %v proto %d status %d, want %s %v proto %d status %d",
				c.target, be.Name, be.Endpoints, be.Protocol, be.Status, c.name, c.endpoints, c.proto, c.status)
		}
	}
	if len(res.Problems) != 3 {
		t.Errorf("problems = %v, want the three unresolved backends", res.Problems)
	}
	// Paths naming the same Service port share a Backend, so round robin
	// spreads over all of their requests.
	a := res.Table.Match(HTTP, netip.Addr{}, req("GET", "h", "/web-80")).Backends[0].Backend
	b := res.Table.Match(HTTP, netip.Addr{}, req("GET", "other", "/again")).Backends[0].Backend
	if a != b {
		t.Errorf("two paths to default/web:80 got separate backends")
	}
}

func TestIngressTLS(t *testing.T) {
	in := Input{
		Secrets: []*corev1.Secret{
			tlsSecret(t, "foo", "foo.example.com"),
			tlsSecret(t, "wild", "*.example.com"),
			tlsSecret(t, "dflt", "default.invalid"),
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "broken"}, Data: map[string][]byte{corev1.TLSCertKey: []byte("x"), corev1.TLSPrivateKeyKey: []byte("y")}},
		},
		Ingresses: []*networkingv1.Ingress{
			newIngress("a", created(1), tlsFor("foo", "foo.example.com"), tlsFor("wild", "*.example.com")),
			newIngress("b", created(2), tlsFor("dflt"), tlsFor("missing", "m.example.com"), tlsFor("broken", "b.example.com")),
			newIngress("c", created(3), tlsFor("dflt", "foo.example.com")), // younger: loses foo.example.com
		},
		Certs: &CertCache{},
	}
	res := Build(in)
	names := func(sni string) string {
		crt := res.Table.Certificate(sni)
		if crt == nil {
			return ""
		}
		return crt.Leaf.DNSNames[0]
	}
	for sni, want := range map[string]string{
		"foo.example.com":   "foo.example.com",
		"FOO.example.com":   "foo.example.com",
		"bar.example.com":   "*.example.com",
		"a.b.example.com":   "default.invalid", // a wildcard covers one label
		"m.example.com":     "*.example.com",
		"unknown.org":       "default.invalid",
		"":                  "default.invalid",
		"example.com":       "default.invalid",
		"b.example.com":     "*.example.com", // the broken secret is skipped
		"foo.example.com.":  "foo.example.com",
		"foo.example.com:1": "foo.example.com",
	} {
		if got := names(sni); got != want {
			t.Errorf("SNI %q: certificate for %q, want %q", sni, got, want)
		}
	}
	if len(res.Problems) != 2 {
		t.Errorf("problems = %v, want missing and broken secret", res.Problems)
	}
	// A rebuild with the same Secrets reuses the parsed certificates.
	again := Build(in)
	if again.Table.Certificate("foo.example.com") != res.Table.Certificate("foo.example.com") {
		t.Errorf("certificate parsed again although the Secret did not change")
	}
	in.Secrets[0] = tlsSecret(t, "foo", "foo.example.com")
	in.Secrets[0].ResourceVersion = "2"
	if Build(in).Table.Certificate("foo.example.com") == res.Table.Certificate("foo.example.com") {
		t.Errorf("certificate not reloaded after the Secret changed")
	}
}

func TestNoCertificates(t *testing.T) {
	if crt := Build(Input{}).Table.Certificate("x"); crt != nil {
		t.Errorf("empty table returned a certificate")
	}
	if rt := Build(Input{}).Table.Match(HTTP, netip.Addr{}, req(http.MethodGet, "x", "/")); rt != nil {
		t.Errorf("empty table matched %s", rt.Name)
	}
}
