package routes

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeKernel records what the controller applies.
type fakeKernel struct {
	mu      sync.Mutex
	desired []Desired
	masq    []string
	mode    Mode
	ip      netip.Addr
}

func (f *fakeKernel) Apply(d Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.desired = append(f.desired, d)
	return nil
}

type fakeMasq struct{ k *fakeKernel }

func (m fakeMasq) Apply(cidr netip.Prefix, ips []netip.Addr) error {
	m.k.mu.Lock()
	defer m.k.mu.Unlock()
	m.k.masq = append(m.k.masq, fmt.Sprint(cidr, ips))
	return nil
}

func (f *fakeKernel) last() (Desired, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.desired) == 0 {
		return Desired{}, ""
	}
	m := ""
	if len(f.masq) > 0 {
		m = f.masq[len(f.masq)-1]
	}
	return f.desired[len(f.desired)-1], m
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestControllerFollowsNodes(t *testing.T) {
	client := fake.NewClientset(
		node("n1", "172.30.0.11", "10.244.0.0/24"),
		node("n2", "172.30.0.12", "10.244.1.0/24"),
	)
	reg := prometheus.NewRegistry()
	c, err := New(Options{
		Client: client, NodeName: "n1", Mode: ModeVXLAN,
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{}
	c.newRoutes = func(m Mode, ip netip.Addr) (routeApplier, error) {
		k.mode, k.ip = m, ip
		return k, nil
	}
	c.masq = fakeMasq{k}
	c.forward = func() error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	waitFor(t, "n2 routed", func() bool { d, _ := k.last(); return peers(d) == "n2=10.244.1.0/24 via 172.30.0.12" })
	if k.mode != ModeVXLAN || k.ip.String() != "172.30.0.11" {
		t.Fatalf("applier made for %s %s, want vxlan and n1's InternalIP", k.mode, k.ip)
	}
	if _, m := k.last(); m != "10.244.0.0/16 [172.30.0.11 172.30.0.12]" {
		t.Fatalf("masquerade applied with %q", m)
	}

	// A node joins: its range is routed once it has one.
	n3 := node("n3", "172.30.0.13", "")
	if _, err := client.CoreV1().Nodes().Create(ctx, n3, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n3.Spec.PodCIDR = "10.244.2.0/24"
	if _, err := client.CoreV1().Nodes().Update(ctx, n3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n3 routed", func() bool {
		d, _ := k.last()
		return peers(d) == "n2=10.244.1.0/24 via 172.30.0.12; n3=10.244.2.0/24 via 172.30.0.13"
	})

	// A node leaves: its route goes, and it is no longer exempt from
	// masquerading.
	if err := client.CoreV1().Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n2 removed", func() bool {
		d, m := k.last()
		return peers(d) == "n3=10.244.2.0/24 via 172.30.0.13" && m == "10.244.0.0/16 [172.30.0.11 172.30.0.13]"
	})
	if got := testutil.ToFloat64(c.peers); got != 1 {
		t.Errorf("peer gauge %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "skiff_podnet_syncs_total"); err != nil || n == 0 {
		t.Errorf("sync counter not exported: %d %v", n, err)
	}
}

// A control plane without a node routes every node's range, itself having
// none, and never turns on forwarding or masquerading.
func TestControllerServerOnly(t *testing.T) {
	client := fake.NewClientset(
		node("n1", "172.30.0.11", "10.244.0.0/24"),
		node("n2", "172.30.0.12", "10.244.1.0/24"),
		node("n3", "172.30.0.13", ""),
	)
	c, err := New(Options{
		Client: client, Mode: ModeVXLAN, NodeIP: netip.MustParseAddr("172.30.0.1"), ServerOnly: true,
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
	})
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{}
	c.newRoutes = func(m Mode, ip netip.Addr) (routeApplier, error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.mode, k.ip = m, ip
		return k, nil
	}
	c.forward = func() error { t.Error("a control plane without a node turned on forwarding"); return nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, "both nodes routed", func() bool {
		d, _ := k.last()
		return peers(d) == "n1=10.244.0.0/24 via 172.30.0.11; n2=10.244.1.0/24 via 172.30.0.12"
	})
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.mode != ModeRouted || k.ip.String() != "172.30.0.1" {
		t.Errorf("applier made for %s %s, want routed from the server's address", k.mode, k.ip)
	}
	if c.masq != nil || len(k.masq) > 0 {
		t.Errorf("a control plane without a node masquerades: %v", k.masq)
	}
	if _, err := New(Options{Client: client, ServerOnly: true}); err == nil {
		t.Error("New without the server's address succeeded")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	client := fake.NewClientset()
	for _, o := range []Options{
		{Client: client, NodeName: "n1", Mode: "bgp"},
		{Client: client, Mode: ModeRouted},
		{NodeName: "n1", Mode: ModeRouted},
		{Client: client, NodeName: "n1", Mode: ModeRouted, ClusterCIDR: netip.MustParsePrefix("fd00::/48")},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func TestWaitForPodCIDR(t *testing.T) {
	client := fake.NewClientset(node("n1", "172.30.0.11", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		time.Sleep(600 * time.Millisecond)
		n := node("n1", "172.30.0.11", "10.244.4.0/24")
		client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	}()
	got, err := WaitForPodCIDR(ctx, client, "n1")
	if err != nil || got.String() != "10.244.4.0/24" {
		t.Fatalf("WaitForPodCIDR = %v, %v", got, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := WaitForPodCIDR(short, client, "absent"); err == nil {
		t.Fatal("WaitForPodCIDR for an absent node returned no error at the deadline")
	}
}
