package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/skiffnet/skiff/ingress/routes"
)

func ptr[T any](v T) *T { return &v }

// tables records swapped tables.
type tables struct {
	mu   sync.Mutex
	last *routes.Table
	n    int
}

func (t *tables) swap(tab *routes.Table) {
	t.mu.Lock()
	t.last, t.n = tab, t.n+1
	t.mu.Unlock()
}

func (t *tables) get() (*routes.Table, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last, t.n
}

// waitRoute waits until the latest table routes host+path to backend
// ("404" for no route) and returns how long that took.
func (t *tables) waitRoute(tb testing.TB, host, path, backend string, within time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	var got string
	for time.Since(start) < within {
		if tab, _ := t.get(); tab != nil {
			r := httptest.NewRequest("GET", path, nil)
			r.Host = host
			got = "404"
			if rt := tab.Match(routes.HTTP, netip.Addr{}, r); rt != nil && len(rt.Backends) > 0 {
				got = rt.Backends[0].Name
			}
			if got == backend {
				return time.Since(start)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	tb.Fatalf("%s%s routed to %q after %v, want %q", host, path, got, within, backend)
	return 0
}

func service(name string) (*corev1.Service, *discoveryv1.EndpointSlice) {
	return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}},
		}
}

func ingress(name, host, path, svc string) *networkingv1.Ingress {
	pt := networkingv1.PathTypePrefix
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Generation: 1},
		Spec: networkingv1.IngressSpec{
			IngressClassName: ptr("skiff"),
			Rules: []networkingv1.IngressRule{{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: path, PathType: &pt, Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}}},
			}}}},
		},
	}
}

func node(name, ip string, ready bool) *corev1.Node {
	st := corev1.ConditionTrue
	if !ready {
		st = corev1.ConditionFalse
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}},
		},
	}
}

func run(t *testing.T, opts Options) *tables {
	t.Helper()
	var tabs tables
	opts.Swap = tabs.swap
	opts.Logger = slog.New(slog.DiscardHandler)
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &tabs
}

func TestIngressLifecycle(t *testing.T) {
	svc, es := service("web")
	client := fake.NewClientset(svc, es, ingress("web", "a.example.com", "/", "web"))
	tabs := run(t, Options{Client: client, NodeIPs: []string{"192.0.2.2", "192.0.2.1", "bogus"}})
	ctx := context.Background()

	tabs.waitRoute(t, "a.example.com", "/", "default/web:80", 5*time.Second)

	// status.loadBalancer lists the node IPs, sorted
	waitFor(t, func() bool {
		ing, err := client.NetworkingV1().Ingresses("default").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && reflect.DeepEqual(ing.Status.LoadBalancer.Ingress, []networkingv1.IngressLoadBalancerIngress{{IP: "192.0.2.1"}, {IP: "192.0.2.2"}})
	}, "ingress status with the node IPs")

	// a new Ingress serves within a second
	if _, err := client.NetworkingV1().Ingresses("default").Create(ctx, ingress("new", "b.example.com", "/", "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := tabs.waitRoute(t, "b.example.com", "/", "default/web:80", time.Second); d > time.Second {
		t.Errorf("new route served after %v", d)
	}
	// endpoints follow EndpointSlices
	es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0.2"}})
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		tab, _ := tabs.get()
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = "a.example.com"
		rt := tab.Match(routes.HTTP, netip.Addr{}, r)
		return rt != nil && len(rt.Backends[0].Endpoints) == 2
	}, "second endpoint in the table")

	// deleting the Ingress removes its route
	if err := client.NetworkingV1().Ingresses("default").Delete(ctx, "new", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	tabs.waitRoute(t, "b.example.com", "/", "404", time.Second)
}

// A burst of changes costs few rebuilds, and the status writes the
// controller makes itself do not trigger more.
func TestDebounce(t *testing.T) {
	svc, es := service("web")
	client := fake.NewClientset(svc, es)
	tabs := run(t, Options{Client: client, NodeIPs: []string{"192.0.2.1"}, Debounce: 50 * time.Millisecond, MaxDelay: 300 * time.Millisecond})
	tabs.waitRoute(t, "h0", "/", "404", 5*time.Second)
	_, before := tabs.get()
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		name := fmt.Sprintf("ing%03d", i)
		if _, err := client.NetworkingV1().Ingresses("default").Create(ctx, ingress(name, name+".example.com", "/", "web"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tabs.waitRoute(t, "ing099.example.com", "/", "default/web:80", 2*time.Second)
	time.Sleep(500 * time.Millisecond)
	_, after := tabs.get()
	if n := after - before; n > 10 {
		t.Errorf("%d rebuilds for 100 changes, want a handful", n)
	}
}

func TestStatusFromNodes(t *testing.T) {
	svc, es := service("web")
	client := fake.NewClientset(svc, es, ingress("web", "", "/", "web"),
		node("n1", "192.0.2.11", true), node("n2", "192.0.2.10", true), node("n3", "192.0.2.12", false))
	run(t, Options{Client: client})
	ctx := context.Background()
	want := []networkingv1.IngressLoadBalancerIngress{{IP: "192.0.2.10"}, {IP: "192.0.2.11"}}
	waitFor(t, func() bool {
		ing, _ := client.NetworkingV1().Ingresses("default").Get(ctx, "web", metav1.GetOptions{})
		return reflect.DeepEqual(ing.Status.LoadBalancer.Ingress, want)
	}, "status with the Ready nodes' InternalIPs")
	// n3 becomes Ready: it joins the status
	n3, _ := client.CoreV1().Nodes().Get(ctx, "n3", metav1.GetOptions{})
	n3.Status.Conditions[0].Status = corev1.ConditionTrue
	n3.ResourceVersion = "2"
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, n3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want = append(want, networkingv1.IngressLoadBalancerIngress{IP: "192.0.2.12"})
	waitFor(t, func() bool {
		ing, _ := client.NetworkingV1().Ingresses("default").Get(ctx, "web", metav1.GetOptions{})
		return reflect.DeepEqual(ing.Status.LoadBalancer.Ingress, want)
	}, "status with the third node")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestGatewayStatusWritten(t *testing.T) {
	svc, es := service("web")
	client := fake.NewClientset(svc, es)
	from := gatewayv1.NamespacesFromAll
	port := gatewayv1.PortNumber(80)
	gw := gatewayfake.NewSimpleClientset(
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "skiff", Generation: 1}, Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.GatewayController}},
		&gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "r", Generation: 1}, Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gatewayv1.Hostname{"gw.example.com"},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: &port}}}}}},
		}},
	)
	// Created through the client: the fake's object tracker would file a
	// Gateway passed to NewSimpleClientset under the guessed "gatewaies".
	if _, err := gw.GatewayV1().Gateways("default").Create(context.Background(), &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw", Generation: 1,
		Annotations: map[string]string{routes.AddressAnnotation: routes.OnNodes}}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "skiff",
		Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &from}}}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tabs := run(t, Options{Client: client, Gateway: gw, NodeIPs: []string{"192.0.2.1"}})
	tabs.waitRoute(t, "gw.example.com", "/", "default/web:80", 5*time.Second)
	ctx := context.Background()
	cond := func(cs []metav1.Condition, typ string) bool {
		for _, c := range cs {
			if c.Type == typ && c.Status == metav1.ConditionTrue && !c.LastTransitionTime.IsZero() {
				return true
			}
		}
		return false
	}
	waitFor(t, func() bool {
		gc, _ := gw.GatewayV1().GatewayClasses().Get(ctx, "skiff", metav1.GetOptions{})
		return cond(gc.Status.Conditions, "Accepted")
	}, "GatewayClass Accepted")
	waitFor(t, func() bool {
		g, _ := gw.GatewayV1().Gateways("default").Get(ctx, "gw", metav1.GetOptions{})
		return cond(g.Status.Conditions, "Programmed") && len(g.Status.Addresses) == 1 && g.Status.Addresses[0].Value == "192.0.2.1" &&
			len(g.Status.Listeners) == 1 && g.Status.Listeners[0].AttachedRoutes == 1
	}, "Gateway Programmed with the node address and one attached route")
	waitFor(t, func() bool {
		r, _ := gw.GatewayV1().HTTPRoutes("default").Get(ctx, "r", metav1.GetOptions{})
		return len(r.Status.Parents) == 1 && cond(r.Status.Parents[0].Conditions, "Accepted") && cond(r.Status.Parents[0].Conditions, "ResolvedRefs")
	}, "HTTPRoute Accepted and ResolvedRefs")
}
