package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestServiceLoadBalancing is issue 5's acceptance points 1, 3 and 4 on the
// real path: pods and nodes connect to ClusterIPs and the node's eBPF socket
// hooks pick a backend.
func TestServiceLoadBalancing(t *testing.T) {
	c := Start(t, Options{Nodes: 3, WaitReady: true})
	c.MustKubectl("apply", "-f", "testdata/echo.yaml", "-f", "testdata/services.yaml", "-f", "testdata/services-labels.yaml")
	c.WaitRollout(t, "deployment/echo")
	ip := c.ClusterIP(t, "echo")
	c.waitBackends(t, ip, 3)
	c.waitBackends(t, c.ClusterIP(t, "echo-udp"), 3)
	echo := filepath.Join(filepath.Dir(c.Bin), "bin", "echo-v1")
	pods := c.Pods(t, "app=echo")

	t.Run("FromNode", func(t *testing.T) {
		out, err := c.Nodes[0].Exec(echo, "get", "http://"+ip+"/", "60")
		checkSpread(t, out, err, 3, 60)
	})
	t.Run("FromPod", func(t *testing.T) {
		out, err := c.Kubectl("exec", pods[0].Name, "--", "/echo", "get", "http://"+ip+"/", "60")
		checkSpread(t, out, err, 3, 60)
		// No NAT on the way: the backend sees the pod's own address.
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(l); len(f) == 2 && !strings.HasPrefix(f[1], pods[0].Status.PodIP+":") {
				t.Errorf("backend saw client %s, want the pod's address %s", f[1], pods[0].Status.PodIP)
				break
			}
		}
	})
	t.Run("UDP", func(t *testing.T) {
		out, err := c.Nodes[1].Exec(echo, "udp", c.ClusterIP(t, "echo-udp")+":5353", "30")
		checkSpread(t, out, err, 3, 30)
	})
	t.Run("SessionAffinity", func(t *testing.T) {
		out, err := c.Nodes[2].Exec(echo, "get", "http://"+c.ClusterIP(t, "echo-sticky")+":8080/", "20")
		checkSpread(t, out, err, 1, 20)
	})
	t.Run("AgentRestartUnderLoad", func(t *testing.T) {
		n := c.Nodes[0]
		done := make(chan string, 1)
		go func() {
			out, err := n.Exec("hey", "-z", "12s", "-c", "4", "http://"+ip+"/")
			done <- fmt.Sprint(out, err)
		}()
		time.Sleep(3 * time.Second)
		n.StopAgent()
		time.Sleep(2 * time.Second)
		n.StartAgent()
		out := <-done
		if codes := heyStatusCodes(out); len(codes) != 1 || codes[0] != "200" || strings.Contains(out, "Error distribution") {
			t.Errorf("requests failed while the agent restarted (status codes %v):\n%s", codes, out)
		}
		c.waitNodes(true)
	})
	t.Run("NodePortFromOutside", func(t *testing.T) {
		port := c.NodePort(t, "echo-nodeport")
		for _, n := range c.Nodes {
			// Several connections, so both local and remote backends answer.
			out, err := c.ClientExec(echo, "get", fmt.Sprintf("http://%s:%d/", n.IP, port), "30")
			checkSpread(t, out, err, 3, 30)
		}
	})
	t.Run("ExternalTrafficPolicyLocal", func(t *testing.T) {
		port := c.NodePort(t, "echo-local")
		for _, n := range c.Nodes {
			out, err := c.ClientExec(echo, "get", fmt.Sprintf("http://%s:%d/", n.IP, port), "10")
			checkSpread(t, out, err, 1, 10)
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(l)
				if p := c.GetPod(t, f[0]); p.Spec.NodeName != n.Name {
					t.Errorf("via %s answered %s on %s, want a pod on the same node", n.Name, f[0], p.Spec.NodeName)
				}
				if !strings.HasPrefix(f[1], clientIP+":") {
					t.Errorf("backend saw %s, want the client's own address %s", f[1], clientIP)
				}
			}
		}
	})
	t.Run("Metrics", func(t *testing.T) {
		// The agent of node 0 has just restarted: give it time to serve.
		var out string
		if err := poll(30*time.Second, func() bool {
			var err error
			out, err = c.Nodes[0].Exec("curl", "-sS", "--max-time", "5", "http://"+c.Nodes[0].IP+":10249/metrics")
			return err == nil
		}); err != nil {
			t.Fatalf("no metrics at %s:10249: %s", c.Nodes[0].IP, out)
		}
		for _, m := range []string{"skiff_proxy_map_entries", "skiff_proxy_sync_duration_seconds", "skiff_podnet_peer_routes", "skiff_dns_queries_total"} {
			if !strings.Contains(out, m) {
				t.Errorf("agent metrics lack %s", m)
			}
		}
	})
	t.Run("ServiceProxyLabels", func(t *testing.T) { testServiceProxyLabels(t, c, echo) })
	t.Run("PublishNotReadyAddresses", func(t *testing.T) { testPublishNotReadyAddresses(t, c, echo) })
	t.Run("NoEndpointsRefused", func(t *testing.T) {
		c.MustKubectl("scale", "deployment/echo", "--replicas=0")
		if err := poll(60*time.Second, func() bool { return c.readyEndpoints(t, "echo") == 0 && c.endpoints(t, "echo") == 0 }); err != nil {
			t.Fatalf("endpoints of echo did not go away: %v", err)
		}
		start := time.Now()
		for {
			out, err := c.Nodes[1].Exec("curl", "-sS", "--max-time", "3", "http://"+ip+"/")
			if err != nil && strings.Contains(out, "Connection refused") || strings.Contains(out, "Couldn't connect") {
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("connect to a Service without endpoints not refused within 1 s: %v %s", err, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// waitBackends waits until every node's load balancer holds want backends
// for the frontends on ip, as `skiff agent services` shows them: a rollout
// is complete when the pods are Ready, a moment before each agent has
// applied the EndpointSlice.
func (c *Cluster) waitBackends(t testing.TB, ip string, want int) {
	t.Helper()
	var last string
	err := poll(30*time.Second, func() bool {
		for _, n := range c.Nodes {
			out, backends, err := c.frontends(n, ip)
			last = n.Name + ":\n" + out
			if err != nil || len(backends) == 0 {
				return false
			}
			for _, b := range backends {
				if b != want {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("the nodes' load balancers never held %d backends for %s; last seen on %s", want, ip, last)
	}
}

// frontends reads node n's `skiff agent services` and returns it with the
// number of backends of each frontend on ip.
func (c *Cluster) frontends(n *Node, ip string) (string, []int, error) {
	out, err := output(n.NS, "", c.Bin, "agent", "services", "--node-name", n.Name)
	if err != nil {
		return out, nil, err
	}
	var backends []int
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && strings.HasPrefix(f[1], ip+":") {
			backends = append(backends, strings.Count(l, "="))
		}
	}
	return out, backends, nil
}

// checkSpread checks the lines of `echo get` output: all n requests
// answered, by exactly want distinct pods, spread evenly when want > 1.
func checkSpread(t *testing.T, out string, err error, want, n int) {
	t.Helper()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	count := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || f[0] == "error" {
			t.Fatalf("bad reply %q in:\n%s", l, out)
		}
		count[f[0]]++
	}
	total := 0
	for _, v := range count {
		total += v
		if want > 1 && v < n/want/3 {
			t.Errorf("uneven spread %v", count)
		}
	}
	if len(count) != want || total != n {
		t.Errorf("%d replies from %d pods %v, want %d from %d", total, len(count), count, n, want)
	}
}

// ClusterIP returns the default namespace's Service's ClusterIP.
func (c *Cluster) ClusterIP(t testing.TB, svc string) string {
	t.Helper()
	s, err := c.Client().CoreV1().Services("default").Get(context.Background(), svc, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Spec.ClusterIP
}

func (c *Cluster) slices(t testing.TB, svc string) []discoveryv1.EndpointSlice {
	l, err := c.Client().DiscoveryV1().EndpointSlices("default").List(context.Background(),
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func (c *Cluster) endpoints(t testing.TB, svc string) int {
	n := 0
	for _, s := range c.slices(t, svc) {
		n += len(s.Endpoints)
	}
	return n
}

func (c *Cluster) readyEndpoints(t testing.TB, svc string) int {
	n := 0
	for _, s := range c.slices(t, svc) {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				n++
			}
		}
	}
	return n
}

// heyStatusCodes lists the status codes in hey's "Status code
// distribution" section.
func heyStatusCodes(out string) []string {
	_, dist, ok := strings.Cut(out, "Status code distribution:")
	if !ok {
		return nil
	}
	dist, _, _ = strings.Cut(strings.TrimLeft(dist, "\n"), "\n\n")
	var codes []string
	for _, m := range regexp.MustCompile(`\[(\d+)\]`).FindAllStringSubmatch(dist, -1) {
		codes = append(codes, m[1])
	}
	return codes
}
