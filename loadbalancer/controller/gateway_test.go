package controller

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/skiffnet/skiff/ingress/routes"
	"github.com/skiffnet/skiff/loadbalancer/api"
)

// TestControllerGateways: one pool serving Services and Gateways; the
// Service and the Gateway get different addresses, a Gateway of another
// controller gets none, and a stale annotation of a Gateway whose request
// is refused is removed.
func TestControllerGateways(t *testing.T) {
	p := poolObject(t, "both", api.Block{CIDR: "192.168.9.0/30"})
	p.Object["spec"].(map[string]any)["serves"] = []any{api.ServesServices, api.ServesGateways}
	kube := fake.NewSimpleClientset(lbService("web", nil))
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{api.PoolGVR: api.Kind + "List"}, p)
	gw := func(name, class string) *gatewayv1.Gateway {
		return &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.NewTime(time.Now().Add(time.Hour))},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: gatewayv1.ObjectName(class)}}
	}
	refused := gw("refused", "skiff")
	refused.Annotations = map[string]string{routes.AddressAnnotation: "192.168.9.2"}
	refused.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "10.1.2.3"}}
	// Created through the client: the tracker would file objects passed to
	// the constructor under v1beta1, whose types are v1's.
	gwc := gatewayfake.NewSimpleClientset()
	setup := context.Background()
	for _, gc := range []*gatewayv1.GatewayClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "skiff"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.GatewayController}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/gw"}},
	} {
		if _, err := gwc.GatewayV1().GatewayClasses().Create(setup, gc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []*gatewayv1.Gateway{gw("g", "skiff"), gw("foreign", "other"), refused} {
		if _, err := gwc.GatewayV1().Gateways("ns").Create(setup, g, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(Options{Client: kube, Dynamic: dyn, Gateway: gwc})
	if err != nil {
		t.Fatal(err)
	}
	ctx := run(t, c)
	annotation := func(name string) string {
		g, err := gwc.GatewayV1().Gateways("ns").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		return g.Annotations[routes.AddressAnnotation]
	}
	svcAddr := func() string {
		s, err := kube.CoreV1().Services("ns").Get(ctx, "web", metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return ""
		}
		return s.Status.LoadBalancer.Ingress[0].IP
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return svcAddr() == "192.168.9.1" && annotation("g") == "192.168.9.2" && annotation("refused") == routes.OnNodes, nil
	})
	if err != nil {
		t.Errorf("want Service web 192.168.9.1 (older), Gateway g 192.168.9.2, refused on the nodes; got %q %q %q", svcAddr(), annotation("g"), annotation("refused"))
	}
	if got := annotation("foreign"); got != "" {
		t.Errorf("a Gateway of another controller got address %q", got)
	}
}
