package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/bpf/bpftest"
	"github.com/skiffnet/skiff/proxy/lbmap"
)

func TestMain(m *testing.M) { bpftest.Main(m) }

// Addresses in 127/8, so that anything left untranslated stays on loopback.
const (
	clusterIP = "127.77.1.1"
	nodeIP    = "127.88.0.1"
)

func webService(name, ip string, proto v1.Protocol, port, nodePort int32) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeNodePort, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []v1.ServicePort{{Name: "p", Port: port, NodePort: nodePort, Protocol: proto}},
		},
	}
}

// endpointSlice holds one backend: test backends listen on 127.0.0.1 at
// different ports, and a slice has one port number.
func endpointSlice(svc string, i int, proto v1.Protocol, backend netip.AddrPort) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("%s-%d", svc, i),
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("p"), Port: ptr.To(int32(backend.Port())), Protocol: ptr.To(proto)}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{backend.Addr().String()}, NodeName: ptr.To("n1"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}},
	}
}

type testProxy struct {
	*Proxy
	reg  *prometheus.Registry
	stop func()
}

func startProxy(t *testing.T, client *fake.Clientset, cgroup, pins string) *testProxy {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(Options{
		Client: client, NodeName: "n1", NodeIPs: []netip.Addr{netip.MustParseAddr(nodeIP)},
		CgroupPath: cgroup, PinDir: pins, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once bool
	stop := func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		p.Close()
	}
	t.Cleanup(stop)
	return &testProxy{Proxy: p, reg: reg, stop: stop}
}

// waitFor polls the kernel's maps until render(Entries) contains want.
func waitFor(t *testing.T, p *testProxy, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		es, err := p.Entries()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		lbmap.Print(&b, es)
		if got = b.String(); strings.Contains(got, want) {
			return
		}
	}
	t.Fatalf("maps never held %q; they hold:\n%s", want, got)
}

func TestProxyBalancesServices(t *testing.T) {
	cg := bpftest.Cgroup(t)
	pins := filepath.Join(bpftest.BPFFS(t), "n1")
	t.Cleanup(func() { bpf.Remove(pins) })

	client := fake.NewClientset(webService("web", clusterIP, v1.ProtocolTCP, 80, 30080))
	for i, name := range []string{"a", "b", "c"} {
		s := endpointSlice("web", i, v1.ProtocolTCP, bpftest.TCPBackend(t, name))
		if _, err := client.DiscoveryV1().EndpointSlices("default").Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p := startProxy(t, client, cg, pins)
	waitFor(t, p, "127.77.1.1:80/TCP")

	for _, vip := range []string{clusterIP + ":80", nodeIP + ":30080"} {
		counts := map[string]int{}
		for _, r := range bpftest.Run(t, cg, "tcp", vip, 60) {
			if !r.OK {
				t.Fatalf("connect to %s: %s", vip, r.Reply)
			}
			counts[r.Reply]++
		}
		if counts["a"] < 5 || counts["b"] < 5 || counts["c"] < 5 {
			t.Errorf("60 connects to %s spread as %v, want all of a, b and c", vip, counts)
		}
	}

	// Scaling to zero refuses new connections within a second.
	start := time.Now()
	for i := range 3 {
		if err := client.DiscoveryV1().EndpointSlices("default").Delete(context.Background(), fmt.Sprintf("web-%d", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		r := bpftest.Run(t, cg, "tcp", clusterIP+":80", 1)[0]
		if !r.OK && r.Reply == "ECONNREFUSED" {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("connect %v after scaling to 0, still %+v", time.Since(start), r)
		}
	}
	if got := testutil.ToFloat64(p.metrics.entries.WithLabelValues("backends")); got != 0 {
		t.Errorf("backend entries after scaling to 0 = %v", got)
	}
	n, err := testutil.GatherAndCount(p.reg, "skiff_proxy_rejects_total", "skiff_proxy_programming_latency_seconds", "skiff_proxy_map_entries")
	if err != nil || n != 6 {
		t.Errorf("metrics: %d series (%v), want rejects by 2 reasons, one latency histogram, 3 map gauges", n, err)
	}
	if err := testutil.GatherAndCompare(p.reg, strings.NewReader(`
# HELP skiff_proxy_map_entries Entries in the load balancer's BPF maps.
# TYPE skiff_proxy_map_entries gauge
skiff_proxy_map_entries{map="backends"} 0
skiff_proxy_map_entries{map="frontends"} 3
skiff_proxy_map_entries{map="slots"} 0
`), "skiff_proxy_map_entries"); err != nil {
		t.Error(err)
	}

	// Deleting the Service removes its frontends.
	if err := client.CoreV1().Services("default").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		es, err := p.Entries()
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("frontends left after the Service was deleted: %v", es)
		}
	}
}

func TestProxyUDP(t *testing.T) {
	cg := bpftest.Cgroup(t)
	pins := filepath.Join(bpftest.BPFFS(t), "n1")
	t.Cleanup(func() { bpf.Remove(pins) })
	client := fake.NewClientset(webService("dns", clusterIP, v1.ProtocolUDP, 53, 0),
		endpointSlice("dns", 0, v1.ProtocolUDP, bpftest.UDPBackend(t, "a")))
	p := startProxy(t, client, cg, pins)
	waitFor(t, p, "127.77.1.1:53/UDP")
	for _, r := range bpftest.Run(t, cg, "udp", clusterIP+":53", 3) {
		if !r.OK || r.Reply != "a" || r.Peer != clusterIP+":53" {
			t.Errorf("datagram through the Service: %+v, want an answer from a seen as %s:53", r, clusterIP)
		}
	}
}

// An agent restart keeps established connections and keeps balancing new
// ones from the pinned maps, and the new agent drops what was deleted
// while it was down.
func TestProxyRestart(t *testing.T) {
	cg := bpftest.Cgroup(t)
	pins := filepath.Join(bpftest.BPFFS(t), "n1")
	t.Cleanup(func() { bpf.Remove(pins) })
	client := fake.NewClientset(webService("web", clusterIP, v1.ProtocolTCP, 80, 0), webService("old", "127.77.1.2", v1.ProtocolTCP, 80, 0),
		endpointSlice("web", 0, v1.ProtocolTCP, bpftest.TCPBackend(t, "a")))
	p := startProxy(t, client, cg, pins)
	waitFor(t, p, "127.77.1.2:80/TCP")
	p.stop()

	// Down: the programs stay attached with the maps they had.
	if r := bpftest.Run(t, cg, "tcp", clusterIP+":80", 1)[0]; !r.OK || r.Reply != "a" {
		t.Fatalf("connect while the agent is down: %+v", r)
	}
	if err := client.CoreV1().Services("default").Delete(context.Background(), "old", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	es, err := Entries(pins)
	if err != nil || len(es) != 2 {
		t.Fatalf("pinned maps while down hold %v (%v), want both Services", es, err)
	}

	p = startProxy(t, client, cg, pins)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		es, err := p.Entries()
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 1 && es[0].Key.Addr.String() == clusterIP {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart the maps hold %v, want only %s", es, clusterIP)
		}
	}
	if r := bpftest.Run(t, cg, "tcp", clusterIP+":80", 1)[0]; !r.OK || r.Reply != "a" {
		t.Fatalf("connect after restart: %+v", r)
	}
}
