package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/skiffnet/skiff/test/harness"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffnet/skiff/agent/cleanup"
	"github.com/skiffnet/skiff/agent/dataplane"
	"github.com/skiffnet/skiff/bpf"
)

// Options shape a cluster.
type Options struct {
	Nodes      int    // default 3
	PodNetwork string // routed (default) or vxlan
	// WaitReady waits for every node to report Ready (it needs the pod
	// network); otherwise Start returns once the nodes registered.
	WaitReady bool
	// GatewayCIDR, when set, is the server's --gateway-cidr. Give it
	// addresses on the nodes' bridge (inside 172.30.0.0/24, away from the
	// nodes' and the client's): one node answers ARP for each Gateway
	// address, so the client needs no route, as on a user's flat network.
	GatewayCIDR string
	// ServerArgs and AgentArgs are appended to every server's and agent's
	// command line (bench/footprint turns on --profile-addr with them).
	ServerArgs, AgentArgs []string
	// Servers above 1 makes a multi-server control plane: server 1 with
	// --cluster-init, the others joining it, each in its own namespace
	// (Cluster.Servers). Agents are seeded with server 1's URL.
	Servers int
	// NoNodes starts no node at all (control-plane benchmarks).
	NoNodes bool
}

// Cluster is a running test cluster.
type Cluster struct {
	t        harness.T
	ID       string
	Bin      string
	Dir      string
	Infra    namespace
	ClientNS namespace
	Nodes    []*Node
	server   *process
	// serverStarts counts server starts; each gets its own output file.
	serverStarts int
	opts         Options
	restCfg      *rest.Config
	// Servers are the servers of a multi-server cluster (Options.Servers).
	Servers []*Server
}

// Start builds the namespaces, starts the server and one agent per node.
func Start(t harness.T, opts Options) *Cluster {
	t.Helper()
	harness.RequireRoot(t)
	if opts.Nodes == 0 && !opts.NoNodes {
		opts.Nodes = 3
	}
	if opts.PodNetwork == "" {
		opts.PodNetwork = "routed"
	}
	c := &Cluster{t: t, ID: newID(), Bin: harness.Binary(t), opts: opts}
	c.Dir = harness.TempDir(t, "cluster-"+c.ID)
	// Runs after every process is gone: the kubelets leave bind mounts of
	// their root dirs and volumes under the cluster's directory.
	t.Cleanup(func() { cleanup.UnmountUnder(c.Dir) })
	c.Infra = buildBridge(t, c.ID)
	c.ClientNS = attach(t, c.Infra, c.ID, "c", c.ID+"-client", clientIP)
	if opts.Servers > 1 {
		c.startServers()
	} else {
		c.startServer()
	}
	c.startRegistry()
	for range opts.Nodes {
		c.AddHost().StartAgent()
	}
	c.waitNodes(opts.WaitReady)
	return c
}

func (c *Cluster) startServer() {
	c.t.Helper()
	data := filepath.Join(c.Dir, "server")
	args := []string{"server", "--data-dir", data, "--advertise-address", bridgeIP, "--disable-agent"}
	if c.opts.GatewayCIDR != "" {
		args = append(args, "--gateway-cidr", c.opts.GatewayCIDR)
	}
	args = append(args, c.opts.ServerArgs...)
	logName := "server.out"
	if c.serverStarts > 0 {
		logName = fmt.Sprintf("server-%d.out", c.serverStarts+1)
	}
	c.serverStarts++
	c.server = start(c.t, c.Infra, "", filepath.Join(c.Dir, logName), c.Bin, args...)
	if err := c.server.waitFor("ready in", 2*time.Minute); err != nil {
		c.t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(data, "kubeconfig"))
	if err != nil {
		c.t.Fatal(err)
	}
	rc.Dial = dialer(c.Infra)
	c.restCfg = rc
}

// StopServer stops the control plane with SIGTERM, as an outage does.
func (c *Cluster) StopServer() { c.server.stop(syscall.SIGTERM) }

// RestartServer starts the stopped server again on its data dir and waits
// until it is ready.
func (c *Cluster) RestartServer() {
	c.t.Helper()
	c.startServer()
}

// Token is the node join token.
func (c *Cluster) Token() string {
	b, err := os.ReadFile(filepath.Join(c.Dir, "server", "token"))
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// ServerURL is where nodes reach the API server.
func (c *Cluster) ServerURL() string {
	if len(c.Servers) > 0 {
		return c.Servers[0].URL()
	}
	return "https://" + bridgeIP + ":6443"
}

// Kubeconfig is the admin kubeconfig; it works from inside the infra
// namespace (see Kubectl), not from the test's own.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.Dir, "server", "kubeconfig") }

// RESTConfig reaches the API server from the test process.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restCfg) }

// Client is an admin clientset usable from the test process.
func (c *Cluster) Client() kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(c.RESTConfig())
}

// Kubectl runs `skiff kubectl` against the cluster.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	return output(c.apiNamespace(), "", c.Bin, append([]string{"kubectl", "--kubeconfig", c.Kubeconfig()}, args...)...)
}

// MustKubectl is Kubectl failing the test on error.
func (c *Cluster) MustKubectl(args ...string) string {
	c.t.Helper()
	out, err := c.Kubectl(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// ClientExec runs a command in the client namespace (outside the cluster).
func (c *Cluster) ClientExec(name string, args ...string) (string, error) {
	return output(c.ClientNS, "", name, args...)
}

func (c *Cluster) waitNodes(ready bool) {
	c.t.Helper()
	client := c.Client()
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 3*time.Minute, true,
		func(ctx context.Context) (bool, error) {
			for _, n := range c.Nodes {
				if n.agent.hasExited() {
					return false, fmt.Errorf("the agent of %s exited", n.Name)
				}
				node, err := client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
				if err != nil {
					return false, nil
				}
				if ready && !nodeReady(node) {
					return false, nil
				}
			}
			return true, nil
		})
	if err != nil {
		var logs []string
		for _, n := range c.Nodes {
			logs = append(logs, n.Name+":\n"+n.agent.tail(30))
		}
		c.t.Fatalf("nodes not registered/ready (ready=%v): %v\n%s", ready, err, strings.Join(logs, "\n"))
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Node is one simulated node.
type Node struct {
	c     *Cluster
	Name  string
	IP    string
	NS    namespace
	agent *process
}

// StartAgent starts (or restarts) the node's agent.
func (n *Node) StartAgent() {
	n.c.t.Helper()
	n.StartAgentBinary(n.c.Bin)
}

// StartAgentBinary starts the node's agent from another skiff binary (an
// upgrade).
func (n *Node) StartAgentBinary(bin string) {
	n.c.t.Helper()
	args := []string{"agent",
		"--server", n.c.ServerURL(), "--token", n.c.Token(), "--node-name", n.Name, "--node-ip", n.IP,
		"--data-dir", filepath.Join(n.c.Dir, "agents"), "--pod-network", n.c.opts.PodNetwork,
		"--insecure-registry", Registry, "--lb-cgroup", "/skiff-" + n.Name,
		"--container-runtime-endpoint", "unix://" + filepath.Join(n.c.Dir, "agents", n.Name, "containerd", "containerd.sock")}
	n.Run(bin, append(args, n.c.opts.AgentArgs...)...)
}

// Run starts the node's agent as the given command line (the test of
// `skiff install` runs the one its unit holds).
func (n *Node) Run(name string, args ...string) {
	n.c.t.Helper()
	if n.agent == nil {
		// Registered first, so it runs last: once the agent is gone, end
		// what it left running on purpose (containers outlive agent restarts).
		n.c.t.Cleanup(n.killLeftovers)
	}
	n.agent = start(n.c.t, n.NS, "", filepath.Join(n.c.Dir, n.Name+".out"), name, args...)
}

// AddHost attaches one more node namespace to the bridge, with no agent.
func (c *Cluster) AddHost() *Node {
	c.t.Helper()
	i := len(c.Nodes)
	name := fmt.Sprintf("%s-n%d", c.ID, i+1)
	n := &Node{c: c, Name: name, IP: NodeIP(i), NS: attach(c.t, c.Infra, c.ID, fmt.Sprintf("n%d", i+1), name, NodeIP(i))}
	c.Nodes = append(c.Nodes, n)
	return n
}

// StopAgent stops the agent with SIGTERM (what a restart does).
func (n *Node) StopAgent() { n.agent.stop(syscall.SIGTERM) }

// KillAgent ends the agent with SIGKILL (a crash).
func (n *Node) KillAgent() { n.agent.stop(syscall.SIGKILL) }

// CgroupDir is the node's cgroup2 directory, where its BPF programs attach.
func (n *Node) CgroupDir() string { return "/sys/fs/cgroup/unified/skiff-" + n.Name }

// Exec runs a command as a process of the node (its namespace and cgroup).
func (n *Node) Exec(name string, args ...string) (string, error) {
	cg := n.CgroupDir()
	if !fileExists(cg) {
		cg = ""
	}
	return output(n.NS, cg, name, args...)
}

// killLeftovers ends every process still in the node's cgroup subtree (the
// containerd shims and containers the node ran) and removes the subtree.
func (n *Node) killLeftovers() {
	if err := killCgroup(n.CgroupDir()); err != nil {
		n.c.t.Logf("cleanup of %s: %v", n.Name, err)
	}
	removeCgroups("skiff-" + n.Name)
	// Shim sockets and container log links land in machine-wide paths.
	containerd := filepath.Join(n.c.Dir, "agents", n.Name, "containerd")
	if err := cleanup.HostLeftovers([]string{containerd}, []string{n.c.Dir}); err != nil {
		n.c.t.Logf("cleanup of %s's shim sockets and log links: %v", n.Name, err)
	}
	// The node's containerd was killed, not asked to stop its pods: their
	// network namespaces (and so veths and routes) are still mounted.
	if _, err := cleanup.RemovePodNetns(cleanup.PodAddresses(filepath.Join(n.c.Dir, "agents", n.Name, "cni", "ipam"))); err != nil {
		n.c.t.Logf("cleanup of %s's pod network namespaces: %v", n.Name, err)
	}
	if err := bpf.Remove(filepath.Join("/sys/fs/bpf/skiff", n.Name)); err != nil {
		n.c.t.Logf("cleanup of %s's BPF pins: %v", n.Name, err)
	}
	// The node's data plane control socket.
	if err := os.RemoveAll(filepath.Dir(dataplane.SocketPath(n.Name))); err != nil {
		n.c.t.Logf("cleanup of %s's runtime dir: %v", n.Name, err)
	}
}
