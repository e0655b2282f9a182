package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffnet/skiff/test/harness"
)

// TestPodNetwork is issue 4's acceptance points 2, 3 and 4 through the real
// runtime: containerd's CRI runs skiff-cni for every pod, and the agents route
// between the nodes. One cluster per mode; the churn runs on the routed one
// and the agent and plugin crashes on the vxlan one, so each cluster does
// one long thing.
func TestPodNetwork(t *testing.T) {
	for _, mode := range []string{"routed", "vxlan"} {
		t.Run(mode, func(t *testing.T) {
			c := Start(t, Options{Nodes: 3, PodNetwork: mode, WaitReady: true})
			c.MustKubectl("apply", "-f", "testdata/podnet.yaml", "-f", "testdata/podnet-churn.yaml")
			c.WaitRollout(t, "daemonset/podnet-a")
			c.WaitRollout(t, "daemonset/podnet-b")
			t.Run("Connectivity", func(t *testing.T) { testPodConnectivity(t, c) })
			switch mode {
			case "routed":
				t.Run("Churn", func(t *testing.T) { testPodChurn(t, c, c.Nodes[0]) })
			case "vxlan":
				t.Run("AgentKilled", func(t *testing.T) { testAgentKilledDuringAdd(t, c, c.Nodes[1]) })
				t.Run("PluginKilled", func(t *testing.T) { testPluginKilledDuringAdd(t, c, c.Nodes[1]) })
			}
		})
	}
}

// requester makes one `echo get` or `echo udp` request from somewhere.
type requester struct {
	name string
	run  func(args ...string) (string, error)
}

func fromPod(c *Cluster, p corev1.Pod) requester {
	return requester{"pod " + p.Name, func(args ...string) (string, error) {
		return c.Kubectl(append([]string{"exec", p.Name, "--", "/echo"}, args...)...)
	}}
}

func fromNode(c *Cluster, n *Node) requester {
	echo := filepath.Join(filepath.Dir(c.Bin), "bin", "echo-v1")
	return requester{"node " + n.Name, func(args ...string) (string, error) { return n.Exec(echo, args...) }}
}

func testPodConnectivity(t *testing.T, c *Cluster) {
	a, b := podsByNode(t, c, "app=podnet-a"), podsByNode(t, c, "app=podnet-b")
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	a1, b1, a2, a3 := a[n1.Name], b[n1.Name], a[n2.Name], a[n3.Name]
	// Servers outside the pod network: one on each of two nodes, and one
	// outside the cluster (the client namespace).
	const nodePort = "18080"
	startEcho(t, n1.NS, "node-"+n1.Name, net.JoinHostPort(n1.IP, nodePort))
	startEcho(t, n2.NS, "node-"+n2.Name, net.JoinHostPort(n2.IP, nodePort))
	startEcho(t, c.ClientNS, "outside", net.JoinHostPort(clientIP, "8080"))
	url := func(ip, port string) string { return "http://" + net.JoinHostPort(ip, port) + "/" }
	podURL := func(p corev1.Pod) string { return url(p.Status.PodIP, "8080") }
	n1Addrs := nodeAddrs(t, n1)

	for _, tc := range []struct {
		name       string
		from       requester
		args       []string
		wantServer string
		wantClient []string // the source address the server must see
	}{
		{"pod to pod on one node", fromPod(c, a1), []string{"get", podURL(b1)}, b1.Name, []string{a1.Status.PodIP}},
		{"pod to pod across nodes 1-2", fromPod(c, a1), []string{"get", podURL(a2)}, a2.Name, []string{a1.Status.PodIP}},
		{"pod to pod across nodes 2-3", fromPod(c, a2), []string{"get", podURL(a3)}, a3.Name, []string{a2.Status.PodIP}},
		{"pod to pod across nodes 3-1", fromPod(c, a3), []string{"get", podURL(b1)}, b1.Name, []string{a3.Status.PodIP}},
		{"pod to pod across nodes, UDP", fromPod(c, a2), []string{"udp", net.JoinHostPort(a1.Status.PodIP, "9001")}, a1.Name, []string{a2.Status.PodIP}},
		{"pod to its own node", fromPod(c, a1), []string{"get", url(n1.IP, nodePort)}, "node-" + n1.Name, []string{a1.Status.PodIP}},
		{"pod to another node", fromPod(c, a1), []string{"get", url(n2.IP, nodePort)}, "node-" + n2.Name, []string{a1.Status.PodIP}},
		{"pod on another node to a node", fromPod(c, a3), []string{"get", url(n1.IP, nodePort)}, "node-" + n1.Name, []string{a3.Status.PodIP}},
		{"node to its own pod", fromNode(c, n1), []string{"get", podURL(a1)}, a1.Name, n1Addrs},
		{"node to a pod on another node", fromNode(c, n1), []string{"get", podURL(a2)}, a2.Name, n1Addrs},
		// Leaving the cluster, the pod's address is masqueraded to its node's.
		{"pod to outside the cluster", fromPod(c, a1), []string{"get", url(clientIP, "8080")}, "outside", []string{n1.IP}},
		{"pod on node 2 to outside the cluster", fromPod(c, a2), []string{"get", url(clientIP, "8080")}, "outside", []string{n2.IP}},
	} {
		out, err := tc.from.run(append(tc.args, "1")...)
		if err != nil {
			t.Errorf("%s: %s %v: %v", tc.name, tc.from.name, tc.args, err)
			continue
		}
		server, client, ok := strings.Cut(strings.TrimSpace(out), " ")
		host, _, herr := net.SplitHostPort(client)
		switch {
		case !ok || herr != nil:
			t.Errorf("%s: reply %q, want \"SERVER CLIENTADDR\"", tc.name, out)
		case server != tc.wantServer:
			t.Errorf("%s: answered by %s, want %s", tc.name, server, tc.wantServer)
		case !slices.Contains(tc.wantClient, host):
			t.Errorf("%s (%s %v): server saw client %s, want %s", tc.name, tc.from.name, tc.args, host, strings.Join(tc.wantClient, " or "))
		default:
			t.Logf("%s: %s answered, saw client %s", tc.name, server, host)
		}
	}

	// Full-size packets across nodes: a node downloads the echo binary
	// (megabytes) from a pod on another node. With the overlay this only
	// works if the pod's MTU leaves room for the VXLAN header.
	echo := filepath.Join(filepath.Dir(c.Bin), "bin", "echo-v1")
	st, err := os.Stat(echo)
	if err != nil {
		t.Fatal(err)
	}
	out, err := n1.Exec("curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "20", podURL(a2)+"file/echo")
	if err != nil || strings.TrimSpace(out) != strconv.FormatInt(st.Size(), 10) {
		t.Errorf("download of /echo (%d bytes) from %s across nodes: got %q bytes, %v", st.Size(), a2.Name, out, err)
	}
}

// podsByNode maps node name to the Ready pod matching selector there (one
// per node: a DaemonSet's).
func podsByNode(t *testing.T, c *Cluster, selector string) map[string]corev1.Pod {
	t.Helper()
	m := map[string]corev1.Pod{}
	for _, p := range c.Pods(t, selector) {
		if p.DeletionTimestamp == nil && podReady(&p) {
			m[p.Spec.NodeName] = p
		}
	}
	if len(m) != len(c.Nodes) {
		t.Fatalf("%s: Ready pods on %d nodes, want %d", selector, len(m), len(c.Nodes))
	}
	return m
}

// startEcho runs the echo server (HTTP only) at addr in ns, answering as
// name, until the test ends.
func startEcho(t *testing.T, ns namespace, name, addr string) {
	t.Helper()
	cmd, err := command(ns, "", filepath.Join(filepath.Dir(harness.Binary(t)), "bin", "echo-v1"), "-http", addr, "-tcp", "", "-udp", "")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "POD_NAME="+name)
	var out harness.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	if err := poll(10*time.Second, func() bool { return strings.Contains(out.String(), "listening") }); err != nil {
		t.Fatalf("echo server at %s in %s did not start: %v\n%s", addr, ns, err, out.String())
	}
}

// nodeAddrs lists the node namespace's IPv4 addresses: a node reaching a pod
// uses whichever its route picks (with the overlay, the VXLAN device's).
func nodeAddrs(t *testing.T, n *Node) []string {
	t.Helper()
	out, err := n.Exec("ip", "-4", "-o", "addr", "show")
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if i := slices.Index(f, "inet"); i >= 0 && i+1 < len(f) {
			if a, _, ok := strings.Cut(f[i+1], "/"); ok && a != "127.0.0.1" {
				addrs = append(addrs, a)
			}
		}
	}
	return addrs
}

// pinChurn puts the churn Deployment's pods on node n.
func pinChurn(c *Cluster, n *Node) {
	c.MustKubectl("patch", "deployment", "churn", "-p",
		fmt.Sprintf(`{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":%q}}}}}`, n.Name))
}

// testPodChurn creates and deletes 200 pods on one node, in rounds of a
// Deployment scaled up until every pod has its address and down until every
// pod is gone, then checks that the node holds addresses, veths and routes
// for the pods that still exist and nothing else.
func testPodChurn(t *testing.T, c *Cluster, n *Node) {
	const rounds, perRound = 10, 20
	checkNoLeftovers(t, c, n) // the checker agrees with a quiet node first
	pinChurn(c, n)
	seen := map[types.UID]bool{}
	start := time.Now()
	for r := range rounds {
		c.MustKubectl("scale", "deployment/churn", fmt.Sprintf("--replicas=%d", perRound))
		err := poll(2*time.Minute, func() bool {
			up := 0
			for _, p := range c.Pods(t, "app=churn") {
				if p.Status.PodIP != "" {
					seen[p.UID] = true
					if p.DeletionTimestamp == nil {
						up++
					}
				}
			}
			return up == perRound
		})
		if err != nil {
			desc, _ := c.Kubectl("get", "pods", "-o", "wide")
			t.Fatalf("round %d: %d churn pods never all got an address: %v\n%s", r, perRound, err, desc)
		}
		c.MustKubectl("scale", "deployment/churn", "--replicas=0")
		if err := poll(2*time.Minute, func() bool { return len(c.Pods(t, "app=churn")) == 0 }); err != nil {
			t.Fatalf("round %d: churn pods not gone: %v", r, err)
		}
	}
	t.Logf("%d pods created and deleted on %s in %s", len(seen), n.Name, time.Since(start).Round(time.Second))
	if len(seen) < rounds*perRound {
		t.Errorf("%d pods got an address, want %d", len(seen), rounds*perRound)
	}
	checkNoLeftovers(t, c, n)
}

// testAgentKilledDuringAdd kills the node's agent (and the kubelet in it)
// with SIGKILL while its pods are being wired, restarts it, and expects
// every pod Ready and reachable from another node. The node's containerd
// outlives the agent (its own process group; the new agent adopts it), so
// ADDs already running finish: killing the plugin itself is
// testPluginKilledDuringAdd.
func testAgentKilledDuringAdd(t *testing.T, c *Cluster, n *Node) {
	const replicas = 10
	pinChurn(c, n)
	c.MustKubectl("scale", "deployment/churn", fmt.Sprintf("--replicas=%d", replicas))
	// Kill once the first pod has its address: the others are being set up.
	addressed := 0
	err := poll(2*time.Minute, func() bool {
		addressed = 0
		for _, p := range c.Pods(t, "app=churn") {
			if p.Status.PodIP != "" {
				addressed++
			}
		}
		return addressed > 0
	})
	if err != nil {
		t.Fatalf("no churn pod got an address: %v", err)
	}
	n.KillAgent()
	t.Logf("killed the agent of %s with %d of %d pods addressed", n.Name, addressed, replicas)
	time.Sleep(2 * time.Second)
	n.StartAgent()
	c.waitNodes(true)
	checkChurnServes(t, c, n, replicas)
	checkNoLeftovers(t, c, n)
}

// testPluginKilledDuringAdd kills skiff-cni processes of the node's
// containerd in the middle of ADD while pods are being created: the runtime
// retries, and every pod must still become Ready and reachable, with nothing
// left behind by the killed attempts.
func testPluginKilledDuringAdd(t *testing.T, c *Cluster, n *Node) {
	const replicas, kills = 20, 5
	before := len(c.Pods(t, "app=churn"))
	pinChurn(c, n)
	c.MustKubectl("scale", "deployment/churn", fmt.Sprintf("--replicas=%d", replicas))
	binDir := filepath.Join(c.Dir, "agents", n.Name, "cni", "bin")
	var killed []string // plugin names (skiff-cni, or loopback: the same binary)
	for deadline := time.Now().Add(60 * time.Second); len(killed) < kills && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, pid := range cgroupPIDs(n.CgroupDir()) {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if strings.HasPrefix(exe, binDir+"/") && slices.Contains(strings.Split(string(env), "\x00"), "CNI_COMMAND=ADD") {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					killed = append(killed, filepath.Base(exe))
				}
			}
		}
	}
	t.Logf("killed %d plugin processes %v in ADD on %s while scaling from %d to %d pods", len(killed), killed, n.Name, before, replicas)
	if !slices.Contains(killed, "skiff-cni") {
		t.Fatalf("caught no skiff-cni ADD of the node's containerd to kill (plugin binaries in %s; killed %v)", binDir, killed)
	}
	checkChurnServes(t, c, n, replicas)
	checkNoLeftovers(t, c, n)
}

// checkChurnServes waits for the churn Deployment's rollout and checks that
// its pods are all Ready on n and answer a pod on the first node.
func checkChurnServes(t *testing.T, c *Cluster, n *Node, replicas int) {
	t.Helper()
	c.WaitRollout(t, "deployment/churn")
	var ready int
	client := fromPod(c, podsByNode(t, c, "app=podnet-a")[c.Nodes[0].Name])
	for _, p := range c.Pods(t, "app=churn") {
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Spec.NodeName != n.Name || !podReady(&p) {
			t.Errorf("pod %s on %s, ready %v", p.Name, p.Spec.NodeName, podReady(&p))
			continue
		}
		ready++
		out, err := client.run("get", "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/", "1")
		if err != nil || !strings.HasPrefix(out, p.Name+" ") {
			t.Errorf("%s → %s (%s): %q %v", client.name, p.Name, p.Status.PodIP, out, err)
		}
	}
	if ready != replicas {
		t.Errorf("%d churn pods Ready, want %d", ready, replicas)
	}
}

// checkNoLeftovers waits up to a minute for the node's IPAM files, skf*
// veths and pod /32 routes to match the pods the API server says run there.
func checkNoLeftovers(t *testing.T, c *Cluster, n *Node) {
	t.Helper()
	var diff string
	var pods int
	err := poll(time.Minute, func() bool {
		diff, pods = podNetLeftovers(t, c, n)
		return diff == ""
	})
	if err != nil {
		t.Errorf("pod network state on %s does not match its pods after a minute:\n%s", n.Name, diff)
		return
	}
	t.Logf("%s: IPAM files, skf* veths and /32 routes match its %d pods", n.Name, pods)
}

// podNetLeftovers compares the node's pod network state with its pods and
// describes every difference ("" if none), and says how many pods have an
// address there.
func podNetLeftovers(t *testing.T, c *Cluster, n *Node) (string, int) {
	t.Helper()
	list, err := c.Client().CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range list.Items {
		if !p.Spec.HostNetwork && p.Status.PodIP != "" {
			want = append(want, p.Status.PodIP)
		}
	}
	node, err := c.Client().CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podCIDR, err := netip.ParsePrefix(node.Spec.PodCIDR)
	if err != nil {
		t.Fatalf("node %s podCIDR %q: %v", n.Name, node.Spec.PodCIDR, err)
	}

	// IPAM: one file per address held, named by the address.
	dir := filepath.Join(c.Dir, "agents", n.Name, "cni", "ipam", "networks", "skiff")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) { // made by the first ADD
		t.Fatalf("IPAM state of %s: %v", n.Name, err)
	}
	var files []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			files = append(files, e.Name())
		}
	}
	// Host sides of pod veths, and the /32 routes into pods.
	links, err := n.Exec("ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var veths []string
	for _, l := range strings.Split(links, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], "skf") {
			veths = append(veths, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	rts, err := n.Exec("ip", "-4", "route", "show")
	if err != nil {
		t.Fatal(err)
	}
	var routes, routeDevs []string
	for _, l := range strings.Split(rts, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		dst := strings.TrimSuffix(f[0], "/32")
		if a, err := netip.ParseAddr(dst); err == nil && podCIDR.Contains(a) {
			routes = append(routes, dst)
			if i := slices.Index(f, "dev"); i >= 0 && i+1 < len(f) {
				routeDevs = append(routeDevs, f[i+1])
			}
		}
	}

	var b strings.Builder
	slices.Sort(want)
	slices.Sort(files)
	slices.Sort(routes)
	if !slices.Equal(files, want) {
		fmt.Fprintf(&b, "IPAM files in %s: %v, want the pod addresses %v\n", dir, files, want)
	}
	if !slices.Equal(routes, want) {
		fmt.Fprintf(&b, "/32 routes into %s: %v, want %v\n", podCIDR, routes, want)
	}
	slices.Sort(veths)
	slices.Sort(routeDevs)
	if len(veths) != len(want) || !slices.Equal(veths, routeDevs) {
		fmt.Fprintf(&b, "%d skf* veths %v for %d pods, whose routes go through %v\n", len(veths), veths, len(want), routeDevs)
	}
	return b.String(), len(want)
}
