package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
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
)

// podSlice puts pod1 (on n1) and/or pod2 (on n2) of a bpftest.LAN behind
// Service svc at port 8080.
func podSlice(svc string, pods ...int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: svc + "-pods",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("p"), Port: ptr.To(int32(8080)), Protocol: ptr.To(v1.ProtocolTCP)}},
	}
	addrs := map[int]netip.Addr{1: bpftest.LANPod1, 2: bpftest.LANPod2}
	for _, p := range pods {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{addrs[p].String()}, NodeName: ptr.To(fmt.Sprintf("n%d", p)),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	return s
}

func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func healthCheck(t *testing.T, port int32) (int, int) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	var body struct {
		LocalEndpoints int `json:"localEndpoints"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.LocalEndpoints
}

// TestProxyNodePortFromOutside runs the controller for node n1 of a
// bpftest.LAN, with the tc programs on its eth0, and connects from the
// client namespace: issue 5's acceptance point 2 on a small scale.
func TestProxyNodePortFromOutside(t *testing.T) {
	l := bpftest.NewLAN(t)
	cg := bpftest.Cgroup(t)
	pins := filepath.Join(bpftest.BPFFS(t), "n1")
	t.Cleanup(func() { bpf.Remove(pins) })
	bpftest.Serve(t, l.Pod1, "pod1")
	bpftest.Serve(t, l.Pod2, "pod2")

	hcPort := freePort(t)
	web := webService("web", "10.96.0.10", v1.ProtocolTCP, 80, 30080)
	lb := webService("lb", "10.96.0.11", v1.ProtocolTCP, 80, 30081)
	lb.Spec.Type = v1.ServiceTypeLoadBalancer
	lb.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	lb.Spec.HealthCheckNodePort = hcPort
	lb.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: bpftest.LANExternal.String()}}
	client := fake.NewClientset(web, lb, podSlice("web", 1, 2), podSlice("lb", 1, 2))

	reg := prometheus.NewRegistry()
	var p *Proxy
	err := bpftest.Do(l.Node1, func() error {
		var err error
		p, err = New(Options{
			Client: client, NodeName: "n1", NodeIPs: []netip.Addr{bpftest.LANNode1},
			CgroupPath: cg, PinDir: pins, Registerer: reg,
			ExternalInterfaces:  []bpf.Interface{{Name: "eth0", SNAT: bpftest.LANNode1}},
			HealthCheckAddr:     netip.MustParseAddr("127.0.0.1"),
			ConntrackGCInterval: 50 * time.Millisecond,
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		p.Close()
	})
	waitFor(t, &testProxy{Proxy: p}, bpftest.LANExternal.String()+":80/TCP")

	t.Run("ClusterPolicy", func(t *testing.T) {
		fe := netip.AddrPortFrom(bpftest.LANNode1, 30080)
		seen := map[string]string{}
		for range 30 {
			a := bpftest.DialTCP(t, l.Client, fe)
			if a.Err != nil || a.From != fe.String() {
				t.Fatalf("connect to NodePort %s: %+v", fe, a)
			}
			seen[a.Backend] = a.SawHost()
		}
		want := map[string]string{"pod1": bpftest.LANClient.String(), "pod2": bpftest.LANNode1.String()}
		if fmt.Sprint(seen) != fmt.Sprint(want) {
			t.Errorf("backends and the client address they saw: %v, want %v", seen, want)
		}
	})

	t.Run("LocalPolicy", func(t *testing.T) {
		for _, fe := range []netip.AddrPort{netip.AddrPortFrom(bpftest.LANNode1, 30081), netip.AddrPortFrom(bpftest.LANExternal, 80)} {
			for range 10 {
				a := bpftest.DialTCP(t, l.Client, fe)
				if a.Err != nil || a.Backend != "pod1" || a.SawHost() != bpftest.LANClient.String() || a.From != fe.String() {
					t.Fatalf("connect to %s: %+v; want only the local pod1, seeing the client's own address", fe, a)
				}
			}
		}
		if code, n := healthCheck(t, hcPort); code != http.StatusOK || n != 1 {
			t.Errorf("health check with a local endpoint: %d, localEndpoints %d; want 200, 1", code, n)
		}

		// The local endpoint goes: the load balancer is told to stop
		// sending traffic here, and traffic that still comes is dropped.
		if _, err := client.DiscoveryV1().EndpointSlices("default").Update(context.Background(), podSlice("lb", 2), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if code, _ := healthCheck(t, hcPort); code == http.StatusServiceUnavailable {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("health check still not 503 five seconds after the local endpoint went away")
			}
		}
		if a := bpftest.DialTCP(t, l.Client, netip.AddrPortFrom(bpftest.LANNode1, 30081)); a.Err == nil {
			t.Errorf("connect without a local endpoint reached %s", a.Backend)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		if n, err := testutil.GatherAndCount(reg, "skiff_proxy_nodeport_packets_total"); err != nil || n != 8 {
			t.Errorf("nodeport packet counters: %d series (%v), want 8", n, err)
		}
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if n, _ := testutil.GatherAndCount(reg, "skiff_proxy_conntrack_entries"); n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no conntrack gauge: garbage collection never ran")
			}
		}
	})

	// The health check port closes with the Service.
	if err := client.CoreV1().Services("default").Delete(context.Background(), "lb", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ := healthCheck(t, hcPort); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("health check port still open after the Service was deleted")
		}
	}
}
