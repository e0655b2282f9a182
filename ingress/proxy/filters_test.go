package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffnet/skiff/ingress/routes"
)

func TestGatewayFilters(t *testing.T) {
	v1 := startBackend(t, "v1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "v1")
		w.Header().Set("X-Internal", "secret")
		fmt.Fprintf(w, "v1 %s host=%s set=%s add=%v drop=%q", r.URL.RequestURI(), r.Host, r.Header.Get("X-Set"), r.Header["X-Add"], r.Header.Get("X-Drop"))
	}), false)
	v2 := startBackend(t, "v2", nil, false)
	slow := startBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}), false)
	var w world
	w.service("v1", "", v1.addr)
	w.service("v2", "", v2.addr)
	w.service("slow", "", slow.addr)
	timeout := gatewayv1.Duration("200ms")
	ptr := func(s string) *string { return &s }
	port := gatewayv1.PortNumber(80)
	ref := func(svc string, weight int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(svc), Port: &port}, Weight: &weight}}
	}
	prefix := func(p string) []gatewayv1.HTTPRouteMatch {
		t := gatewayv1.PathMatchPathPrefix
		return []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &t, Value: &p}}}
	}
	code := 301
	redirect := gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{
		Scheme: ptr("https"), Hostname: (*gatewayv1.PreciseHostname)(ptr("new.example.com")), StatusCode: &code,
		Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr("/new")},
	}}
	rewrite := gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{
		Hostname: (*gatewayv1.PreciseHostname)(ptr("internal.svc")),
		Path:     &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr("/api")},
	}}
	rules := []gatewayv1.HTTPRouteRule{
		{Matches: prefix("/headers"), BackendRefs: []gatewayv1.HTTPBackendRef{ref("v1", 1)}, Filters: []gatewayv1.HTTPRouteFilter{
			{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{
				Set: []gatewayv1.HTTPHeader{{Name: "X-Set", Value: "set"}}, Add: []gatewayv1.HTTPHeader{{Name: "X-Add", Value: "added"}}, Remove: []string{"X-Drop"}}},
			{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{
				Set: []gatewayv1.HTTPHeader{{Name: "X-Served-By", Value: "skiff"}}, Remove: []string{"X-Internal"}}},
		}},
		{Matches: prefix("/old"), Filters: []gatewayv1.HTTPRouteFilter{redirect}},
		{Matches: prefix("/rewrite"), BackendRefs: []gatewayv1.HTTPBackendRef{ref("v1", 1)}, Filters: []gatewayv1.HTTPRouteFilter{rewrite}},
		{Matches: prefix("/split"), BackendRefs: []gatewayv1.HTTPBackendRef{ref("v1", 90), ref("v2", 10)}},
		{Matches: prefix("/nobackend")},
		{Matches: prefix("/slow"), BackendRefs: []gatewayv1.HTTPBackendRef{ref("slow", 1)}, Timeouts: &gatewayv1.HTTPRouteTimeouts{Request: &timeout}},
	}
	from := gatewayv1.NamespacesFromAll
	w.in.Gateway = &routes.GatewayInput{
		Classes: []*gatewayv1.GatewayClass{{ObjectMeta: metav1.ObjectMeta{Name: "skiff"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.GatewayController}}},
		Gateways: []*gatewayv1.Gateway{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "skiff",
			Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &from}}}}}}},
		HTTPRoutes: []*gatewayv1.HTTPRoute{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "r"}, Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}}, Rules: rules}}},
	}
	p := startProxy(t, Options{}, w.table(t))

	code2, body, h := get(t, plainClient, p.httpURL+"/headers", "h", "X-Drop", "x", "X-Add", "client", "X-Set", "client")
	if code2 != 200 || !strings.Contains(body, `set=set add=[client added] drop=""`) {
		t.Errorf("request headers: %d %q", code2, body)
	}
	if h.Get("X-Served-By") != "skiff" || h.Get("X-Internal") != "" {
		t.Errorf("response headers not modified: %v", h)
	}

	code2, _, h = get(t, plainClient, p.httpURL+"/old/page?q=1", "h:8080")
	if code2 != 301 || h.Get("Location") != "https://new.example.com/new/page?q=1" {
		t.Errorf("redirect: %d Location %q", code2, h.Get("Location"))
	}

	_, body, _ = get(t, plainClient, p.httpURL+"/rewrite/users?id=7", "h")
	if !strings.Contains(body, "v1 /api/users?id=7 host=internal.svc") {
		t.Errorf("rewrite: backend saw %q", body)
	}

	counts := map[string]int{}
	for i := 0; i < 2000; i++ {
		_, _, h := get(t, plainClient, p.httpURL+"/split", "h")
		counts[h.Get("X-Backend")]++
	}
	if counts["v2"] < 140 || counts["v2"] > 260 || counts["v1"]+counts["v2"] != 2000 {
		t.Errorf("90/10 over 2000 requests: %v", counts)
	}

	if code2, _, _ := get(t, plainClient, p.httpURL+"/nobackend", "h"); code2 != 500 {
		t.Errorf("rule without backends: %d, want 500", code2)
	}

	// The backend answers after 5 s: a 504 means the rule's 200ms
	// request timeout ended the exchange first.
	if code2, _, _ := get(t, plainClient, p.httpURL+"/slow", "h"); code2 != 504 {
		t.Errorf("backend slower than the rule's 200ms request timeout: %d, want 504", code2)
	}
}
