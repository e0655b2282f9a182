package cluster

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffnet/skiff/loadbalancer/announce"
	"github.com/skiffnet/skiff/loadbalancer/api"
)

// TestLoadBalancer is issue 14 on a 3-node cluster, seen from the client
// namespace on the nodes' bridge (their L2 segment): node-address mode
// without pools, then a pool's allocation, a requested address, sharing,
// exhaustion, a foreign class, bad pools, externalTrafficPolicy Local,
// exactly one node answering ARP, a Gateway on a pool address, and
// failover when that node dies.
func TestLoadBalancer(t *testing.T) {
	c := Start(t, Options{Nodes: 3, WaitReady: true})
	c.MustKubectl("apply", "-f", "testdata/echo.yaml")
	c.WaitRollout(t, "deployment/echo")
	echo := filepath.Join(filepath.Dir(c.Bin), "bin", "echo-v1")
	ctx := context.Background()
	svcs := c.Client().CoreV1().Services("default")
	create := func(t *testing.T, s *corev1.Service) {
		t.Helper()
		if _, err := svcs.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(names ...string) {
		for _, n := range names {
			svcs.Delete(ctx, n, metav1.DeleteOptions{})
		}
	}

	t.Run("NodeAddresses", func(t *testing.T) {
		create(t, lbService("lb-nodes", 8080))
		create(t, lbService("lb-port80", 80)) // the nodes' ingress proxy holds :80
		defer remove("lb-nodes", "lb-port80")
		var want []string
		for _, n := range c.Nodes {
			want = append(want, n.IP)
		}
		got := c.waitIngress(t, "lb-nodes", len(want))
		if !slices.Equal(got, want) {
			t.Fatalf("EXTERNAL-IP = %v, want the node addresses %v", got, want)
		}
		for _, n := range c.Nodes {
			out, err := c.ClientExec(echo, "get", "http://"+n.IP+":8080/", "30")
			checkSpread(t, out, err, 3, 30)
		}
		c.waitPending(t, "lb-port80", "PortsTaken", "80/TCP")
	})

	c.applyPool(t, poolYAML("test", "start: 172.30.0.200, stop: 172.30.0.203"))
	t.Run("Pool", func(t *testing.T) {
		create(t, lbService("lb-a", 80))
		if got := c.waitIngress(t, "lb-a", 1); got[0] != "172.30.0.200" {
			t.Errorf("lb-a got %v, want the pool's first address 172.30.0.200", got)
		}
		s, _ := svcs.Get(ctx, "lb-a", metav1.GetOptions{})
		if m := s.Status.LoadBalancer.Ingress[0].IPMode; m == nil || *m != corev1.LoadBalancerIPModeVIP {
			t.Errorf("ipMode = %v, want VIP", m)
		}
	})
	t.Run("Requested", func(t *testing.T) {
		s := lbService("lb-req", 80)
		s.Annotations = map[string]string{api.IPsAnnotation: "172.30.0.203"}
		create(t, s)
		if got := c.waitIngress(t, "lb-req", 1); got[0] != "172.30.0.203" {
			t.Errorf("lb-req got %v, want the requested 172.30.0.203", got)
		}
		out := lbService("lb-outside", 80)
		out.Spec.LoadBalancerIP = "172.30.0.250"
		create(t, out)
		c.waitPending(t, "lb-outside", "RequestOutsidePools", "172.30.0.250 is in no LoadBalancerPool")
	})
	t.Run("Sharing", func(t *testing.T) {
		for i, port := range []int32{8081, 8082} {
			s := lbService(fmt.Sprintf("lb-share%d", i+1), port)
			s.Annotations = map[string]string{api.SharingKeyAnnotation: "k"}
			create(t, s)
		}
		a, b := c.waitIngress(t, "lb-share1", 1), c.waitIngress(t, "lb-share2", 1)
		if a[0] != b[0] || a[0] != "172.30.0.201" {
			t.Errorf("shared Services got %v and %v, want both 172.30.0.201", a, b)
		}
		for _, port := range []string{"8081", "8082"} {
			c.waitAnswers(t, "http://"+a[0]+":"+port+"/")
			out, err := c.ClientExec(echo, "get", "http://"+a[0]+":"+port+"/", "30")
			checkSpread(t, out, err, 3, 30)
		}
	})
	t.Run("Exhausted", func(t *testing.T) {
		create(t, lbService("lb-more", 80))
		c.waitIngress(t, "lb-more", 1)
		create(t, lbService("lb-full", 80))
		c.waitPending(t, "lb-full", "PoolExhausted", "LoadBalancerPool test has no free address")
		out := c.MustKubectl("get", "lbpool", "test", "-o", "custom-columns=USED:.status.used,FREE:.status.free")
		if f := strings.Fields(out); len(f) != 4 || f[2] != "4" || f[3] != "0" {
			t.Errorf("pool status: want used 4, free 0:\n%s", out)
		}
		if out := c.MustKubectl("get", "lbpool", "test"); !strings.Contains(out, "USED") || !strings.Contains(out, "FREE") {
			t.Errorf("kubectl get lbpool shows no USED and FREE columns:\n%s", out)
		}
	})
	t.Run("BadPools", func(t *testing.T) {
		c.applyPool(t, poolYAML("overlap", "cidr: 172.30.0.200/30"))
		c.applyPool(t, poolYAML("services", "cidr: 10.96.100.0/24"))
		c.applyPool(t, poolYAML("nodes", "cidr: 172.30.0.8/29"))
		defer c.Kubectl("delete", "lbpool", "overlap", "services", "nodes")
		c.waitPoolInvalid(t, "overlap", "overlaps 172.30.0.200-172.30.0.203 of the older pool test")
		c.waitPoolInvalid(t, "services", "--service-cidr")
		c.waitPoolInvalid(t, "nodes", "holds node")
		out, err := c.Kubectl("apply", "-f", c.poolFile(t, poolYAML("v6", "cidr: fd00::/120")))
		if err == nil {
			c.waitPoolInvalid(t, "v6", "IPv6 pools are not supported")
			c.Kubectl("delete", "lbpool", "v6")
		} else if !strings.Contains(out, "IPv6") {
			t.Errorf("an IPv6 pool: %v %s", err, out)
		}
	})
	t.Run("ForeignClass", func(t *testing.T) {
		s := lbService("lb-foreign", 80)
		class := "example.com/lb"
		s.Spec.LoadBalancerClass = &class
		create(t, s)
		// Allocation is one pass over all Services: once a later Service
		// has its address, the foreign one has been looked at.
		create(t, lbService("lb-after", 80))
		c.waitPending(t, "lb-after", "PoolExhausted", "")
		got, _ := svcs.Get(ctx, "lb-foreign", metav1.GetOptions{})
		if len(got.Status.LoadBalancer.Ingress) != 0 || len(got.Status.Conditions) != 0 {
			t.Errorf("a Service of class %s was touched: %+v", class, got.Status)
		}
	})

	vip := "172.30.0.200"
	var leader *Node
	t.Run("OneNodeAnswersARP", func(t *testing.T) {
		c.waitAnswers(t, "http://"+vip+"/")
		var macs []string
		macs, leader = c.arpRepliesHeld(t, vip)
		if len(macs) != 1 || macs[0] != c.mac(t, leader) {
			t.Fatalf("ARP replies for %s came from %v, want only %s's %s", vip, macs, leader.Name, c.mac(t, leader))
		}
		out, err := c.ClientExec(echo, "get", "http://"+vip+"/", "30")
		checkSpread(t, out, err, 3, 30)
	})
	t.Run("LocalPolicy", func(t *testing.T) {
		// lb-full waits for an address: free one, and give the Local
		// Service the pods of one node only.
		remove("lb-more", "lb-full", "lb-after")
		only := c.Nodes[1]
		c.MustKubectl("label", "pod", "-l", "app=echo", "--field-selector", "spec.nodeName="+only.Name, "lb-local=yes")
		s := lbService("lb-local", 80)
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.Selector = map[string]string{"app": "echo", "lb-local": "yes"}
		create(t, s)
		addr := c.waitIngress(t, "lb-local", 1)[0]
		// The address was lb-more's, announced by any node: its holder
		// must hand it to the one node with a ready endpoint.
		var got *Node
		if err := poll(30*time.Second, func() bool { got = c.announcer(t, addr); return got == only }); err != nil {
			t.Fatalf("%s (externalTrafficPolicy Local) is announced by %s, want %s, the only node with an endpoint", addr, got.Name, only.Name)
		}
		c.waitAnswers(t, "http://"+addr+"/")
		if macs, _ := c.arpRepliesHeld(t, addr); len(macs) != 1 || macs[0] != c.mac(t, only) {
			t.Errorf("ARP replies for %s came from %v, want only %s's %s", addr, macs, only.Name, c.mac(t, only))
		}
	})
	t.Run("Gateway", func(t *testing.T) { testGatewayOnPool(t, c) })
	t.Run("Failover", func(t *testing.T) {
		if leader == nil {
			t.Skip("no announcing node")
		}
		leader.KillAgent()
		if err := ip(c.Infra, "link", "set", c.ID+"n"+strings.TrimPrefix(leader.Name, c.ID+"-n"), "down"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var out string
		if err := poll(60*time.Second, func() bool {
			var err error
			out, err = c.ClientExec("curl", "-sS", "--max-time", "1", "http://"+vip+"/")
			return err == nil
		}); err != nil {
			t.Fatalf("no new connection to %s succeeded after %s died: %s", vip, leader.Name, out)
		}
		next := c.announcer(t, vip)
		if next == leader {
			t.Errorf("%s still holds the Lease of %s", leader.Name, vip)
		}
		t.Logf("failover to %s: first new request answered %.1fs after %s died (not a benchmark: see bench/lbfailover)", next.Name, time.Since(start).Seconds(), leader.Name)
	})
}

func lbService(name string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Name: "http", Port: port, TargetPort: intstr.FromString("http")}},
		},
	}
}

func (c *Cluster) poolFile(t testing.TB, yaml string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pool.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (c *Cluster) applyPool(t testing.TB, yaml string) {
	t.Helper()
	c.MustKubectl("apply", "-f", c.poolFile(t, yaml))
}

func poolYAML(name, block string) string {
	return fmt.Sprintf("apiVersion: %s/%s\nkind: %s\nmetadata: {name: %s}\nspec:\n  blocks: [{%s}]\n", api.Group, api.Version, api.Kind, name, block)
}

// waitIngress waits until Service name has n addresses and returns them.
func (c *Cluster) waitIngress(t testing.TB, name string, n int) []string {
	t.Helper()
	var got []string
	var last *corev1.Service
	err := poll(30*time.Second, func() bool {
		s, err := c.Client().CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		last, got = s, nil
		for _, ing := range s.Status.LoadBalancer.Ingress {
			got = append(got, ing.IP)
		}
		return len(got) == n
	})
	if err != nil {
		t.Fatalf("Service %s: want %d addresses, status %+v", name, n, last.Status)
	}
	sort.Slice(got, func(i, j int) bool { return netip.MustParseAddr(got[i]).Less(netip.MustParseAddr(got[j])) })
	return got
}

// waitPending waits for the Service's condition to say reason, and for an
// event saying so.
func (c *Cluster) waitPending(t testing.TB, name, reason, msg string) {
	t.Helper()
	var last string
	err := poll(30*time.Second, func() bool {
		s, err := c.Client().CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		cond := meta.FindStatusCondition(s.Status.Conditions, api.ConditionAssigned)
		if cond == nil {
			return false
		}
		last = fmt.Sprintf("%s %s: %s (ingress %v)", cond.Status, cond.Reason, cond.Message, s.Status.LoadBalancer.Ingress)
		if cond.Status != metav1.ConditionFalse || cond.Reason != reason || !strings.Contains(cond.Message, msg) || len(s.Status.LoadBalancer.Ingress) > 0 {
			return false
		}
		evs, err := c.Client().CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=" + reason})
		return err == nil && len(evs.Items) > 0
	})
	if err != nil {
		t.Fatalf("Service %s: want pending with %s %q and an event; condition: %s", name, reason, msg, last)
	}
}

func (c *Cluster) waitPoolInvalid(t testing.TB, name, msg string) {
	t.Helper()
	var out string
	err := poll(30*time.Second, func() bool {
		out, _ = c.Kubectl("get", "lbpool", name, "-o", `jsonpath={.status.conditions[?(@.type=="Valid")].status} {.status.conditions[?(@.type=="Valid")].message}`)
		return strings.HasPrefix(out, "False ") && strings.Contains(out, msg)
	})
	if err != nil {
		t.Errorf("LoadBalancerPool %s: want Valid False saying %q, got %q", name, msg, out)
	}
}

// waitAnswers waits until url answers from the client namespace: the
// first request can race the address's announcement and the nodes' maps.
func (c *Cluster) waitAnswers(t testing.TB, url string) {
	t.Helper()
	var out string
	if err := poll(30*time.Second, func() bool {
		var err error
		out, err = c.ClientExec("curl", "-sS", "--max-time", "2", url)
		return err == nil
	}); err != nil {
		t.Fatalf("%s does not answer from the client namespace: %s", url, out)
	}
}

// announcer is the node holding addr's Lease, once one does.
func (c *Cluster) announcer(t testing.TB, addr string) *Node {
	t.Helper()
	var holder string
	err := poll(30*time.Second, func() bool {
		l, err := c.Client().CoordinationV1().Leases("kube-system").Get(context.Background(), announce.LeaseName(netip.MustParseAddr(addr)), metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return false
		}
		// A released Lease has an empty holder; only a live node counts.
		holder = *l.Spec.HolderIdentity
		n := c.nodeOrNil(holder)
		return n != nil && !n.agent.hasExited()
	})
	if err != nil {
		t.Fatalf("no live node holds the Lease of %s (holder %q)", addr, holder)
	}
	return c.node(holder)
}

func (c *Cluster) mac(t testing.TB, n *Node) string {
	t.Helper()
	out, err := output(n.NS, "", "ip", "-br", "link", "show", "eth0")
	f := strings.Fields(out)
	if err != nil || len(f) < 3 {
		t.Fatalf("MAC of %s: %v %s", n.Name, err, out)
	}
	return f[2]
}

// arpRepliesHeld probes addr's ARP answerers while one node holds its
// Lease throughout, and returns them and that node. A Lease that changes
// hands during the probe (a renewal late on a loaded machine) is a
// legitimate takeover whose gratuitous ARP would show beside the old
// holder's reply: the probe is repeated then, up to three times.
func (c *Cluster) arpRepliesHeld(t testing.TB, addr string) ([]string, *Node) {
	t.Helper()
	var macs []string
	for try := 1; ; try++ {
		before := c.announcer(t, addr)
		transitions := c.leaseTransitions(t, addr)
		macs = c.arpReplies(t, addr)
		after := c.announcer(t, addr)
		if after == before && c.leaseTransitions(t, addr) == transitions {
			return macs, after
		}
		if try == 3 {
			t.Fatalf("the Lease of %s changed hands during each of 3 ARP probes (last: %s to %s)", addr, before.Name, after.Name)
		}
		t.Logf("the Lease of %s moved from %s to %s during the ARP probe (replies %v); probing again", addr, before.Name, after.Name, macs)
	}
}

func (c *Cluster) leaseTransitions(t testing.TB, addr string) int32 {
	t.Helper()
	l, err := c.Client().CoordinationV1().Leases("kube-system").Get(context.Background(), announce.LeaseName(netip.MustParseAddr(addr)), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Lease of %s: %v", addr, err)
	}
	if l.Spec.LeaseTransitions == nil {
		return 0
	}
	return *l.Spec.LeaseTransitions
}

// arpReplies asks for addr from the client namespace and returns the MAC
// of every node that answered within a second.
func (c *Cluster) arpReplies(t testing.TB, addr string) []string {
	t.Helper()
	var cl *arp.Client
	err := inNamespace(c.ClientNS, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		cl, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		t.Fatalf("ARP socket in the client namespace: %v", err)
	}
	defer cl.Close()
	target := netip.MustParseAddr(addr)
	if err := cl.Request(target); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	cl.SetReadDeadline(time.Now().Add(time.Second))
	for {
		p, _, err := cl.Read()
		if err != nil {
			break
		}
		if p.Operation == arp.OperationReply && p.SenderIP == target {
			seen[p.SenderHardwareAddr.String()] = true
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// inNamespace runs f on a thread inside ns; sockets it opens stay there.
func inNamespace(ns namespace, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(ns.Path())
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// testGatewayOnPool: a pool that serves Gateways gives a Gateway of class
// skiff its first address, which status.addresses shows, one node
// announces, and the client on the bridge reaches the HTTPRoute at with no
// route; a Service cannot take that address.
func testGatewayOnPool(t *testing.T, c *Cluster) {
	c.applyPool(t, `apiVersion: lb.skiff.io/v1alpha1
kind: LoadBalancerPool
metadata: {name: gw}
spec:
  serves: [Gateways]
  blocks: [{cidr: 172.30.0.240/29}]
`)
	c.MustKubectl("apply", "-f", c.poolFile(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: lb-gw}
spec:
  gatewayClassName: skiff
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: lb-gw}
spec:
  parentRefs: [{name: lb-gw}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
`))
	const addr = "172.30.0.241" // the /29's first usable address
	var got string
	if err := poll(60*time.Second, func() bool {
		got, _ = c.Kubectl("get", "gateway", "lb-gw", "-o", "jsonpath={.status.addresses[*].value}")
		return got == addr
	}); err != nil {
		t.Fatalf("Gateway lb-gw status.addresses = %q, want %s from pool gw", got, addr)
	}
	c.waitAnswers(t, "http://"+addr+"/")
	if macs, holder := c.arpRepliesHeld(t, addr); len(macs) != 1 || macs[0] != c.mac(t, holder) {
		t.Errorf("ARP replies for the Gateway address %s came from %v, want only %s's %s", addr, macs, holder.Name, c.mac(t, holder))
	}
	// -f: a 404 from the proxy (no route for the address) fails.
	if out, err := c.ClientExec("curl", "-fsS", "--max-time", "5", "http://"+addr+"/"); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("GET http://%s/ through the Gateway's HTTPRoute: %v %q", addr, err, out)
	}
	s := lbService("lb-wants-gw", 8081)
	s.Annotations = map[string]string{api.IPsAnnotation: addr}
	if _, err := c.Client().CoreV1().Services("default").Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitPending(t, "lb-wants-gw", "RequestOutsidePools", "does not serve Services")
}
