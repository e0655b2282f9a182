// Package lbfailover measures how long a LoadBalancer address is
// unreachable when the node announcing it dies: on a 3-node test cluster
// with a pool on the nodes' bridge, each trial kills the agent of the node
// holding the address's Lease and cuts its link, then times the first new
// HTTP request from the client namespace (same L2 segment) that succeeds.
// Connections established through the dead node before it died are tried
// again and counted as lost when they fail. Between trials the node comes
// back (link up, agent restarted). ROUNDS sets the number of trials
// (default 20); ETP the Service's externalTrafficPolicy (default Local,
// see etp). Each trial also reports when another node took the Lease
// (its acquireTime), which splits the failover into the election and the
// rest (gratuitous ARP, the client's next attempt).
//
// The peer in the same run is a graceful handover: the holder's agent is
// stopped with SIGTERM, releasing its Leases, which is the floor a crash
// can approach.
//
//	bench/lbfailover/run.sh      (as root, after make build)
package lbfailover

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/skiffnet/skiff/loadbalancer/announce"
	"github.com/skiffnet/skiff/test/cluster"
)

const (
	vip   = "172.30.0.200"
	conns = 8 // connections held open through the address in each trial
)

// etp is the Service's externalTrafficPolicy (ETP, default Local). With
// Local every node serves the address from its own echo pod (one runs on
// each node), so a trial times the announcement's failover alone. With
// Cluster the new holder also sends a share of new connections to the
// dead node's pod, which stays an endpoint until the node is declared
// lost, as under kube-proxy: each such attempt costs the client a timeout.
func etp() corev1.ServiceExternalTrafficPolicy {
	if os.Getenv("ETP") == "Cluster" {
		return corev1.ServiceExternalTrafficPolicyCluster
	}
	return corev1.ServiceExternalTrafficPolicyLocal
}

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
	fmt.Printf("lease settings: %s; externalTrafficPolicy %s\n", announce.DefaultTiming, etp())
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
			Ports:                 []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}},
			ExternalTrafficPolicy: etp()},
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
	holder, held := prepare(b, c)
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
	for _, conn := range held {
		if exchange(conn, 2*time.Second) != nil {
			lost++
		}
		conn.Close()
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
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		l, err := getLease(c)
		if err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != dead.Name && l.Spec.AcquireTime != nil {
			return l.Spec.AcquireTime.Sub(t0)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("no other node than %s took the Lease of %s", dead.Name, vip)
	return 0
}

// prepare finds the holder, has the client resolve vip afresh and opens
// the held connections. The client's neighbour entry must come from an
// ARP reply now, so it names the holder: an older entry could point at a
// node still alive, and the trial would measure nothing. If the Lease
// moved meanwhile (a holder starved of CPU for a second loses it; the
// fence keeps it silent), it starts again.
func prepare(b *testing.B, c *cluster.Cluster) (*cluster.Node, []net.Conn) {
	b.Helper()
	for range 5 {
		holder, l := waitServing(b, c)
		if out, err := exec.Command("ip", "-n", string(c.ClientNS), "neigh", "flush", "to", vip).CombinedOutput(); err != nil {
			b.Fatalf("ip neigh flush %s: %v %s", vip, err, out)
		}
		held := openConns(c)
		got, want := neighbour(b, c), mac(b, holder)
		if now := lease(b, c); now.Spec.HolderIdentity == nil || *now.Spec.HolderIdentity != holder.Name ||
			ptr.Deref(now.Spec.LeaseTransitions, 0) != ptr.Deref(l.Spec.LeaseTransitions, 0) {
			b.Logf("the Lease moved from %s while preparing a trial; again", holder.Name)
			for _, conn := range held {
				conn.Close()
			}
			continue
		}
		if got != want {
			b.Fatalf("the client reaches %s at %s, but the Lease holder %s is %s throughout: two nodes answer ARP", vip, got, holder.Name, want)
		}
		return holder, held
	}
	b.Fatalf("the Lease of %s kept moving", vip)
	return nil, nil
}

func lease(b *testing.B, c *cluster.Cluster) *coordinationv1.Lease {
	b.Helper()
	l, err := getLease(c)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// getLease reads the Lease electing vip's announcer.
func getLease(c *cluster.Cluster) (*coordinationv1.Lease, error) {
	name := announce.LeaseName(netip.MustParseAddr(vip))
	return c.Client().CoordinationV1().Leases("kube-system").Get(context.Background(), name, metav1.GetOptions{})
}

// waitServing waits until the address answers and a live node holds its
// Lease, and returns that node and the Lease.
func waitServing(b *testing.B, c *cluster.Cluster) (*cluster.Node, *coordinationv1.Lease) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		l, err := getLease(c)
		if err == nil && l.Spec.HolderIdentity != nil {
			for _, n := range c.Nodes {
				if n.Name == *l.Spec.HolderIdentity && get(c, http.DefaultTransport.(*http.Transport).Clone(), time.Second) == nil {
					return n, l
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("%s not served, or its Lease not held, within 2 minutes", vip)
	return nil, nil
}

// openConns opens keep-alive connections through the address, each
// with one request answered. They are plain TCP connections, so that a
// request on a dead one fails instead of being retried on a new
// connection, as net/http does for a GET on a reused connection.
func openConns(c *cluster.Cluster) []net.Conn {
	var out []net.Conn
	for range conns {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := cluster.DialerIn(c.ClientNS.Path())(ctx, "tcp", vip+":80")
		cancel()
		if err != nil {
			continue
		}
		if exchange(conn, time.Second) != nil {
			conn.Close()
			continue
		}
		out = append(out, conn)
	}
	return out
}

// exchange sends one GET on conn and reads its answer.
func exchange(conn net.Conn, timeout time.Duration) error {
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: "+vip+"\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
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
// does once its data plane, the announcer included, has started, and its
// node is Ready again; then a few seconds more, so that the next trial
// does not start while the node is still busy starting (on two shared
// cores that starves Lease renewals).
func waitAgent(b *testing.B, c *cluster.Cluster, n *cluster.Node) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		out, err := n.Exec("curl", "-sf", "--max-time", "2", "http://"+n.IP+":10249/metrics")
		if err == nil && strings.Contains(out, "skiff_lb_announced_addresses") {
			if node, err := c.Client().CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{}); err == nil && nodeReady(node) {
				time.Sleep(3 * time.Second)
				return
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	b.Fatalf("the agent of %s did not come back", n.Name)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
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
