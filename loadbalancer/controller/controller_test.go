package controller

import (
	"context"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiffnet/skiff/loadbalancer/api"
)

func poolObject(t *testing.T, name string, blocks ...api.Block) *unstructured.Unstructured {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&api.Pool{
		TypeMeta:   metav1.TypeMeta{APIVersion: api.Group + "/" + api.Version, Kind: api.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       api.PoolSpec{Blocks: blocks},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: raw}
}

func lbService(name string, class *string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.Now()},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, LoadBalancerClass: class,
			Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}},
	}
}

// TestController runs the controller against fake API clients: a Service
// gets an address of the pool with ipMode VIP and a True condition, one of
// a foreign class is left alone, and the pool's status counts it.
func TestController(t *testing.T) {
	foreign := "example.com/lb"
	kube := fake.NewSimpleClientset(lbService("web", nil), lbService("other", &foreign))
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{api.PoolGVR: api.Kind + "List"}, poolObject(t, "p", api.Block{CIDR: "192.168.9.0/30"}))
	c, err := New(Options{Client: kube, Dynamic: dyn})
	if err != nil {
		t.Fatal(err)
	}
	ctx := run(t, c)
	get := func(name string) *v1.Service {
		s, err := kube.CoreV1().Services("ns").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return len(get("web").Status.LoadBalancer.Ingress) == 1, nil
	})
	if err != nil {
		t.Fatalf("Service web got no address: %+v", get("web").Status)
	}
	ing := get("web").Status.LoadBalancer.Ingress[0]
	if ing.IP != "192.168.9.1" || ing.IPMode == nil || *ing.IPMode != v1.LoadBalancerIPModeVIP {
		t.Errorf("ingress = %+v, want 192.168.9.1 with ipMode VIP", ing)
	}
	if conds := get("web").Status.Conditions; len(conds) != 1 || conds[0].Type != api.ConditionAssigned || conds[0].Status != metav1.ConditionTrue {
		t.Errorf("conditions = %+v", conds)
	}
	if st := get("other").Status; len(st.LoadBalancer.Ingress) != 0 || len(st.Conditions) != 0 {
		t.Errorf("a Service of another class was touched: %+v", st)
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := dyn.Resource(api.PoolGVR).Get(ctx, "p", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		used, _, _ := unstructured.NestedInt64(p.Object, "status", "used")
		free, _, _ := unstructured.NestedInt64(p.Object, "status", "free")
		return used == 1 && free == 1, nil
	})
	if err != nil {
		t.Errorf("pool status not used=1 free=1: %v", err)
	}
}

func TestParseBlocks(t *testing.T) {
	b, err := ParseBlocks("--lb-pool", "192.168.1.240/28, 192.168.2.10-192.168.2.20")
	if err != nil || len(b) != 2 || b[0].CIDR != "192.168.1.240/28" || b[1].Start != "192.168.2.10" || b[1].Stop != "192.168.2.20" {
		t.Errorf("ParseBlocks = %+v, %v", b, err)
	}
	for _, bad := range []string{"", "fd00::/64", "10.0.0.9-10.0.0.1", "nonsense"} {
		if _, err := ParseBlocks("--lb-pool", bad); err == nil {
			t.Errorf("--lb-pool %q accepted", bad)
		}
	}
}

// run runs the controller until the test ends, failing the test if Run
// returns an error, and returns the context it runs under.
func run(t *testing.T, c *Controller) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ctx
}
