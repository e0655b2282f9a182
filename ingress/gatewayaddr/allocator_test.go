package gatewayaddr

import (
	"context"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/skiffnet/skiff/ingress/routes"
)

func gw(name string, age int, annotation string) *gatewayv1.Gateway {
	g := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name,
			CreationTimestamp: metav1.NewTime(time.Unix(1_000_000-int64(age), 0))},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "skiff"},
	}
	if annotation != "" {
		g.Annotations = map[string]string{routes.AddressAnnotation: annotation}
	}
	return g
}

func TestPlan(t *testing.T) {
	pool := netip.MustParsePrefix("10.250.0.0/29") // .1 to .6 usable
	requested := gw("requested", 50, "")
	requested.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "10.250.0.1"}}
	got := Plan(pool, []*gatewayv1.Gateway{
		gw("new", 1, ""),
		gw("keeps", 100, "10.250.0.3"),
		gw("duplicate", 10, "10.250.0.3"), // younger than keeps
		gw("outside", 20, "192.0.2.1"),
		gw("broadcast", 30, "10.250.0.7"),
		requested,
	})
	want := []Assignment{ // oldest first, lowest free address first
		{Gateway: name("broadcast"), Addr: netip.MustParseAddr("10.250.0.2")},
		{Gateway: name("outside"), Addr: netip.MustParseAddr("10.250.0.4")},
		{Gateway: name("duplicate"), Addr: netip.MustParseAddr("10.250.0.5")},
		{Gateway: name("new"), Addr: netip.MustParseAddr("10.250.0.6")},
	}
	if len(got.Assign) != len(want) || got.Exhausted != 0 {
		t.Fatalf("Plan = %+v, want %+v", got, want)
	}
	for i := range want {
		if got.Assign[i] != want[i] {
			t.Errorf("assignment %d = %v, want %v", i, got.Assign[i], want[i])
		}
	}
	full := Plan(netip.MustParsePrefix("10.250.0.0/30"), []*gatewayv1.Gateway{gw("a", 3, ""), gw("b", 2, ""), gw("c", 1, "")})
	if len(full.Assign) != 2 || full.Exhausted != 1 {
		t.Errorf("a /30 has two usable addresses: got %+v, want 2 assigned and 1 exhausted", full)
	}
}

func name(n string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: n} }

// TestAllocator runs the controller against a fake API: a new Gateway of
// the skiff class gets an annotation, one of another class does not.
func TestAllocator(t *testing.T) {
	other := gw("other", 5, "")
	other.Spec.GatewayClassName = "someone-else"
	client := fake.NewSimpleClientset()
	setup := context.Background()
	for _, c := range []*gatewayv1.GatewayClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "skiff"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: routes.GatewayController}},
		{ObjectMeta: metav1.ObjectMeta{Name: "someone-else"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/gw"}},
	} {
		if _, err := client.GatewayV1().GatewayClasses().Create(setup, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []*gatewayv1.Gateway{gw("first", 10, ""), other} {
		if _, err := client.GatewayV1().Gateways("ns").Create(setup, g, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := NewAllocator(client, netip.MustParsePrefix("10.250.0.0/24"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	if _, err := client.GatewayV1().Gateways("ns").Create(ctx, gw("second", 1, ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	annotation := func(n string) string {
		g, err := client.GatewayV1().Gateways("ns").Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		return g.Annotations[routes.AddressAnnotation]
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return annotation("first") == "10.250.0.1" && annotation("second") == "10.250.0.2", nil
	})
	if err != nil {
		t.Errorf("want first=10.250.0.1 second=10.250.0.2, got %q %q", annotation("first"), annotation("second"))
	}
	if got := annotation("other"); got != "" {
		t.Errorf("a Gateway of another controller got address %q", got)
	}
}

func TestNewAllocatorRejectsPool(t *testing.T) {
	for _, p := range []string{"10.250.0.1/32", ""} {
		pool, _ := netip.ParsePrefix(p)
		if _, err := NewAllocator(fake.NewSimpleClientset(), pool, "", nil); err == nil {
			t.Errorf("pool %q accepted", p)
		}
	}
}
