package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffnet/skiff/agent/dataplane"
)

// TestDataPlaneOutlivesAgent is the data-plane continuity issue's scenarios
// 1-4 on one node of a 3-node cluster: while hey drives the Ingress (HTTP
// and HTTPS), a ClusterIP and a NodePort through that node, and a pod on
// it resolves a Service name every 10 ms, the node's agent is restarted,
// upgraded, crashes, and the control plane goes away for a while. Each
// scenario must end with 0 failed requests, 0 non-2xx answers and 0 failed
// or wrong DNS answers. Scenario 5 (rolling updates) is TestRolloutUnderLoad.
func TestDataPlaneOutlivesAgent(t *testing.T) {
	c := Start(t, Options{WaitReady: true})
	n := c.Nodes[0]
	c.MustKubectl("apply", "-f", "../../examples/demo/")
	c.MustKubectl("expose", "deployment/demo", "--name", "demo-np", "--type", "NodePort", "--port", "80", "--target-port", "http")
	resolver := filepath.Join(t.TempDir(), "resolver.yaml")
	if err := os.WriteFile(resolver, []byte(resolverPod(n.Name)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.MustKubectl("apply", "-f", resolver)
	c.WaitRollout(t, "deployment/demo")
	c.WaitPod(t, "resolver", podReady)
	next := upgradeBinary(t)

	clusterIP := strings.TrimSpace(c.MustKubectl("get", "service", "demo", "-o", "jsonpath={.spec.clusterIP}"))
	nodePort := c.NodePort(t, "demo-np")
	// Everything answers before the first scenario starts.
	if err := poll(60*time.Second, func() bool {
		_, e1 := c.ClientExec("curl", "-fsS", "--max-time", "2", "-H", "Host: demo.localhost", "http://"+n.IP+"/")
		_, e2 := c.ClientExec("curl", "-fsS", "--max-time", "2", fmt.Sprintf("http://%s:%d/", n.IP, nodePort))
		_, e3 := n.Exec("curl", "-fsS", "--max-time", "2", "http://"+clusterIP+"/")
		return e1 == nil && e2 == nil && e3 == nil
	}); err != nil {
		t.Fatalf("the demo does not answer through the Ingress, NodePort and ClusterIP of %s", n.Name)
	}
	podsBefore := podRestarts(t, c)

	agentRestart := func(stop func(), bin string) func(t *testing.T) {
		return func(t *testing.T) {
			before := dataPlanePID(t, n)
			stop()
			n.StartAgentBinary(bin)
			// The new agent's data plane has taken over once the control
			// socket answers with another pid.
			if err := poll(3*time.Minute, func() bool {
				st, err := dataplane.ReadStatus(context.Background(), dataplane.SocketPath(n.Name))
				return err == nil && st.PID != before && st.Predecessor != nil && st.Predecessor.PID == before
			}); err != nil {
				t.Fatalf("no new data plane took over from pid %d:\n%s", before, n.agent.tail(30))
			}
		}
	}
	scenarios := []struct {
		name    string
		disrupt func(t *testing.T)
	}{
		{"GracefulRestart", agentRestart(n.StopAgent, c.Bin)},
		{"Upgrade", func(t *testing.T) {
			agentRestart(n.StopAgent, next)(t)
			st, err := dataplane.ReadStatus(context.Background(), dataplane.SocketPath(n.Name))
			if err != nil || st.Version != upgradeVersion || st.Predecessor.Version == upgradeVersion {
				t.Errorf("after the upgrade the data plane reports %+v (%v); want version %s, taken over from another", st, err, upgradeVersion)
			}
		}},
		{"Crash", agentRestart(n.KillAgent, c.Bin)},
		{"ControlPlaneDown", func(t *testing.T) {
			c.StopServer()
			time.Sleep(60 * time.Second)
			c.RestartServer()
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			dnsBefore := resolverTotals(t, c)
			loads := startLoads(t, c, n, clusterIP, nodePort)
			time.Sleep(2 * time.Second)
			sc.disrupt(t)
			// Let the old data plane finish draining under load.
			time.Sleep(5 * time.Second)
			for _, l := range loads {
				r, out := l.hey.stop(t)
				t.Logf("%s: %d responses, codes %v, %d errors", l.name, r.total(), r.codes, r.errors)
				if r.errors > 0 || r.total() == 0 || r.total() != r.codes[200] {
					t.Errorf("%s: %d failed requests, codes %v; want only 200s:\n%s", l.name, r.errors, r.codes, out)
				}
			}
			var dnsAfter dnsTotals
			// The kubelet serves logs again once the node is back.
			if err := poll(time.Minute, func() bool {
				dnsAfter = resolverTotals(t, c)
				return dnsAfter.total > dnsBefore.total
			}); err != nil {
				t.Fatalf("the resolver pod's totals did not move: %+v", dnsAfter)
			}
			t.Logf("DNS: %d lookups, %d failed, %d wrong, slowest %d ms", dnsAfter.total-dnsBefore.total,
				dnsAfter.failed-dnsBefore.failed, dnsAfter.wrong-dnsBefore.wrong, dnsAfter.slowestMS)
			if dnsAfter.failed != dnsBefore.failed || dnsAfter.wrong != dnsBefore.wrong {
				t.Errorf("DNS lookups failed (%d) or were wrong (%d) during %s", dnsAfter.failed-dnsBefore.failed,
					dnsAfter.wrong-dnsBefore.wrong, sc.name)
			}
		})
	}
	if after := podRestarts(t, c); after != podsBefore {
		t.Errorf("pods restarted or were replaced: before %v\nafter %v", podsBefore, after)
	}
}

type load struct {
	name string
	hey  *heyRun
}

// startLoads runs hey through every path of node n until stopped.
func startLoads(t *testing.T, c *Cluster, n *Node, clusterIP string, nodePort int32) []load {
	const conc = "10"
	return []load{
		{"ingress http", startHey(t, c.ClientNS, "", "-z", "30m", "-c", conc, "-host", "demo.localhost", "http://"+n.IP+"/")},
		{"ingress https", startHey(t, c.ClientNS, "", "-z", "30m", "-c", conc, "-host", "demo.localhost", "https://"+n.IP+"/")},
		{"clusterip", startHey(t, n.NS, n.CgroupDir(), "-z", "30m", "-c", conc, "http://"+clusterIP+"/")},
		{"nodeport", startHey(t, c.ClientNS, "", "-z", "30m", "-c", conc, fmt.Sprintf("http://%s:%d/", n.IP, nodePort))},
	}
}

func dataPlanePID(t *testing.T, n *Node) int {
	t.Helper()
	st, err := dataplane.ReadStatus(context.Background(), dataplane.SocketPath(n.Name))
	if err != nil {
		t.Fatalf("node %s's data plane: %v", n.Name, err)
	}
	return st.PID
}

// resolverPod resolves the API server's Service name every 10 ms on node,
// through the pod's resolv.conf (the kube-dns ClusterIP, sent to the
// node's DNS by the load balancer).
func resolverPod(node string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: resolver}
spec:
  nodeName: %s
  containers:
  - name: resolve
    image: skiff.local/echo:v1
    command: ["/echo", "resolve", "kubernetes.default.svc.cluster.local.", "10ms"]
`, node)
}

type dnsTotals struct{ total, failed, wrong, slowestMS int }

var resolveLine = regexp.MustCompile(`resolve total=(\d+) failed=(\d+) wrong=(\d+) slowest_ms=(\d+)`)

// resolverTotals reads the resolver pod's latest running totals.
func resolverTotals(t *testing.T, c *Cluster) dnsTotals {
	t.Helper()
	out, err := c.Kubectl("logs", "resolver", "--tail", "50")
	if err != nil {
		return dnsTotals{}
	}
	ms := resolveLine.FindAllStringSubmatch(out, -1)
	if len(ms) == 0 {
		return dnsTotals{}
	}
	m := ms[len(ms)-1]
	var d dnsTotals
	for i, p := range []*int{&d.total, &d.failed, &d.wrong, &d.slowestMS} {
		*p, _ = strconv.Atoi(m[i+1])
	}
	return d
}

// podRestarts names every pod with its UID and restart count.
func podRestarts(t *testing.T, c *Cluster) string {
	t.Helper()
	return strings.TrimSpace(c.MustKubectl("get", "pods", "-A", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.containerStatuses[*].restartCount}{"\n"}{end}`))
}

const upgradeVersion = "upgrade-test"

// upgradeBinary is a skiff built from the same code with another version
// string: SKIFF_UPGRADE_BINARY, or built here (a link step with a warm
// build cache).
func upgradeBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("SKIFF_UPGRADE_BINARY"); b != "" {
		return b
	}
	out := filepath.Join(t.TempDir(), "skiff-"+upgradeVersion)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+upgradeVersion, "-o", out, "github.com/skiffnet/skiff/cmd/skiff")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the upgrade binary: %v\n%s", err, b)
	}
	return out
}
