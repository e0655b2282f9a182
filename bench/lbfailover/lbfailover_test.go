// Package lbfailover measures how long a LoadBalancer address is
// unreachable when the node announcing it dies: on a 3-node test cluster
// with a pool on the nodes' bridge, each trial kills the agent of the node
// holding the address's Lease and cuts its link, then times the first new
// HTTP request from the client namespace (same L2 segment) that succeeds.
// Connections established through the dead node before it died are tried
// again and counted as lost when they fail. Between trials the node comes
// back (link up, agent restarted). ROUNDS sets the number of trials
// (default 20).
//
// The peer in the same run is a graceful handover: the holder's agent is
// stopped with SIGTERM, releasing its Leases, which is the floor a crash
// can approach.
//
//	bench/lbfailover/run.sh      (as root, after make build)
package lbfailover

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffnet/skiff/loadbalancer/announce"
	"github.com/skiffnet/skiff/test/cluster"
)

const (
	vip   = "172.30.0.200"
	conns = 8 // connections held open through the address in each trial
)

func BenchmarkLBFailover(b *testing.B) {
	rounds := 20
	if v, err := strconv.Atoi(os.Getenv("ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	c := cluster.Start(b, cluster.Options{Nodes: 3, WaitReady: true})
	setup(b, c)
	var crash, graceful, takeover []time.Duration
	lost, held := 0, 0
	for b.Loop() {
		for round := range rounds {
			r := trial(b, c, false)
			crash, takeover = append(crash, r.took), append(takeover, r.takeover)
			lost, held = lost+r.lost, held+r.held
			b.Logf("crash %d at %s: %v (Lease taken after %v), %d of %d connections lost",
				round+1, r.at.Format("15:04:05.000"), r.took, r.takeover, r.lost, r.held)
		}
		for round := range max(rounds/4, 5) {
			r := trial(b, c, true)
			graceful = append(graceful, r.took)
			b.Logf("graceful %d at %s: %v", round+1, r.at.Format("15:04:05.000"), r.took)
		}
	}
	b.StopTimer()
	fmt.Printf("\nLoadBalancer address failover: announcing node dies -> first new request from the L2 client succeeds\n")
	fmt.Printf("lease settings: %s\n", announce.DefaultTiming)
	fmt.Printf("%-40s %8s %10s %10s %10s %12s\n", "how the holder goes", "trials", "p50", "p99", "max", "p50 ratio")
	row := func(name string, d []time.Duration) {
		fmt.Printf("%-40s %8d %10s %10s %10s %11.1fx\n", name, len(d), ms(pct(d, 50)), ms(pct(d, 99)), ms(pct(d, 100)),
			float64(pct(d, 50))/float64(max(pct(graceful, 50), time.Millisecond)))
	}
	row("agent killed + link cut (crash)", crash)
	row("  until another node took the Lease", takeover)
	row("agent stopped, Leases released (peer)", graceful)
	fmt.Printf("connections established through the dead node: %d of %d lost\n", lost, held)
}

func setup(b *testing.B, c *cluster.Cluster) {
	b.Helper()
	dir := b.TempDir()
	pool := fmt.Sprintf("apiVersion: lb.skiff.io/v1alpha1\nkind: LoadBalancerPool\nmetadata: {name: bench}\nspec:\n  blocks: [{cidr: %s/32}]\n", vip)
	if err := os.WriteFile(dir+"/pool.yaml", []byte(pool), 0o644); err != nil {
		b.Fatal(err)
	}
	c.MustKubectl("apply", "-f", "../../test/cluster/testdata/echo.yaml", "-f", dir+"/pool.yaml")
	c.WaitRollout(b, "deployment/echo")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "lb"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}}},
	}
	if _, err := c.Client().CoreV1().Services("default").Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
}

// result is one trial: when the holder went down, how long until a new
// request succeeded and until another node took the Lease (its
// acquireTime), and how many held connections were lost.
type result struct {
	at             time.Time
	took, takeover time.Duration
	lost, held     int
}

// trial takes the holder of vip down and measures the failover.
func trial(b *testing.B, c *cluster.Cluster, graceful bool) result {
	b.Helper()
	holder := waitServing(b, c)
	// The client's neighbour entry must come from an ARP reply now, so it
	// names the holder: an older entry could point at a node still alive
	// (every node's tc programs serve the address), and the trial would
	// measure nothing.
	if out, err := exec.Command("ip", "-n", string(c.ClientNS), "neigh", "flush", "to", vip).CombinedOutput(); err != nil {
		b.Fatalf("ip neigh flush %s: %v %s", vip, err, out)
	}
	held := openConns(c)
	if got, want := neighbour(b, c), mac(b, holder); got != want {
		b.Fatalf("the client reaches %s at %s, but the Lease holder %s is %s: two nodes answer ARP", vip, got, holder.Name, want)
	}
	t0 := time.Now()
	if graceful {
		holder.StopAgent()
	} else {
		holder.KillAgent()
		link(b, c, holder, "down")
	}
	var took time.Duration
	for {
		if get(c, http.DefaultTransport.(*http.Transport).Clone(), 300*time.Millisecond) == nil {
			took = time.Since(t0)
			break
		}
		if time.Since(t0) > time.Minute {
			b.Fatalf("no request to %s succeeded within a minute of %s going down", vip, holder.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	takeover := leaseTaken(b, c, holder, t0)
	lost := 0
	for _, tr := range held {
		if get(c, tr, 2*time.Second) != nil {
			lost++
		}
		tr.CloseIdleConnections()
	}
	if !graceful {
		link(b, c, holder, "up")
	}
	holder.StartAgent()
	waitAgent(b, c, holder)
	return result{at: t0, took: took, takeover: takeover, lost: lost, held: len(held)}
}

// leaseTaken is how long after t0 another node than dead acquired the
// address's Lease (the API server and the nodes share this machine's
// clock).
func leaseTaken(b *testing.B, c *cluster.Cluster, dead *cluster.Node, t0 time.Time) time.Duration {
	b.Helper()
	name := announce.LeaseName(netip.MustParseAddr(vip))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		l, err := c.Client().CoordinationV1().Leases("kube-system").Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != dead.Name && l.Spec.AcquireTime != nil {
			return l.Spec.AcquireTime.Sub(t0)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("no other node than %s took the Lease of %s", dead.Name, vip)
	return 0
}

// waitServing waits until the address answers and a live node holds its
// Lease, and returns that node.
func waitServing(b *testing.B, c *cluster.Cluster) *cluster.Node {
	b.Helper()
	name := announce.LeaseName(netip.MustParseAddr(vip))
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		l, err := c.Client().CoordinationV1().Leases("kube-system").Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && l.Spec.HolderIdentity != nil {
			for _, n := range c.Nodes {
				if n.Name == *l.Spec.HolderIdentity && get(c, http.DefaultTransport.(*http.Transport).Clone(), time.Second) == nil {
					return n
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("%s not served, or its Lease not held, within 2 minutes", vip)
	return nil
}

// openConns opens keep-alive connections through the address, one per
// transport, each with one request answered.
func openConns(c *cluster.Cluster) []*http.Transport {
	var out []*http.Transport
	for range conns {
		tr := &http.Transport{DialContext: cluster.DialerIn(c.ClientNS.Path()), MaxIdleConnsPerHost: 1}
		if get(c, tr, time.Second) == nil {
			out = append(out, tr)
		}
	}
	return out
}

func get(c *cluster.Cluster, tr *http.Transport, timeout time.Duration) error {
	tr.DialContext = cluster.DialerIn(c.ClientNS.Path())
	client := &http.Client{Transport: tr, Timeout: timeout}
	resp, err := client.Get("http://" + vip + "/")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return err
}

// neighbour is the MAC address the client namespace has for vip.
func neighbour(b *testing.B, c *cluster.Cluster) string {
	b.Helper()
	out, err := exec.Command("ip", "-n", string(c.ClientNS), "neigh", "show", vip).CombinedOutput()
	f := strings.Fields(string(out))
	i := slices.Index(f, "lladdr")
	if err != nil || i < 0 || i+1 >= len(f) {
		b.Fatalf("the client's neighbour entry for %s: %v %q", vip, err, out)
	}
	return f[i+1]
}

func mac(b *testing.B, n *cluster.Node) string {
	b.Helper()
	out, err := exec.Command("ip", "-n", string(n.NS), "-br", "link", "show", "eth0").CombinedOutput()
	f := strings.Fields(string(out))
	if err != nil || len(f) < 3 {
		b.Fatalf("MAC of %s: %v %s", n.Name, err, out)
	}
	return f[2]
}

// link sets the node's port on the bridge down or up.
func link(b *testing.B, c *cluster.Cluster, n *cluster.Node, state string) {
	b.Helper()
	peer := c.ID + "n" + strings.TrimPrefix(n.Name, c.ID+"-n")
	if out, err := exec.Command("ip", "-n", string(c.Infra), "link", "set", peer, state).CombinedOutput(); err != nil {
		b.Fatalf("ip link set %s %s: %v %s", peer, state, err, out)
	}
}

// waitAgent waits until the restarted agent serves its metrics, which it
// does once its data plane, the announcer included, has started.
func waitAgent(b *testing.B, c *cluster.Cluster, n *cluster.Node) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if out, err := n.Exec("curl", "-sf", "--max-time", "2", "http://"+n.IP+":10249/metrics"); err == nil && strings.Contains(out, "skiff_lb_announced_addresses") {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	b.Fatalf("the agent of %s did not come back", n.Name)
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
