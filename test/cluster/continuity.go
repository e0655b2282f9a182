package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiffnet/skiff/agent/containerd"
	"github.com/skiffnet/skiff/agent/dataplane"
)

// This file drives a node's data plane under load while something is done
// to the node (an agent restart, an upgrade, a control-plane outage) and
// counts what clients saw: test/cluster asserts on the counts, bench/restart
// prints them.

// ContinuityWorkload is what the load runs against: examples/demo behind
// its Ingress (demo.localhost) and ClusterIP, a NodePort Service for it,
// and a pod on the node resolving a Service name every 10 ms.
type ContinuityWorkload struct {
	Node      *Node
	ClusterIP string
	NodePort  int32
}

// DeployContinuityWorkload deploys the workload with its resolver on n and
// waits until every path answers through n.
func (c *Cluster) DeployContinuityWorkload(t testing.TB, n *Node) ContinuityWorkload {
	t.Helper()
	c.MustKubectl("apply", "-f", filepath.Join(repoRoot(t), "examples", "demo"))
	c.MustKubectl("expose", "deployment/demo", "--name", "demo-np", "--type", "NodePort", "--port", "80", "--target-port", "http")
	resolver := filepath.Join(t.TempDir(), "resolver.yaml")
	if err := os.WriteFile(resolver, []byte(resolverPod(n.Name)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.MustKubectl("apply", "-f", resolver)
	c.WaitRollout(t, "deployment/demo")
	c.WaitPod(t, "resolver", podReady)
	w := ContinuityWorkload{
		Node:      n,
		ClusterIP: strings.TrimSpace(c.MustKubectl("get", "service", "demo", "-o", "jsonpath={.spec.clusterIP}")),
		NodePort:  c.NodePort(t, "demo-np"),
	}
	if err := poll(60*time.Second, func() bool {
		_, e1 := c.ClientExec("curl", "-fsS", "--max-time", "2", "-H", "Host: demo.localhost", "http://"+n.IP+"/")
		_, e2 := c.ClientExec("curl", "-fsS", "--max-time", "2", fmt.Sprintf("http://%s:%d/", n.IP, w.NodePort))
		_, e3 := n.Exec("curl", "-fsS", "--max-time", "2", "http://"+w.ClusterIP+"/")
		return e1 == nil && e2 == nil && e3 == nil
	}); err != nil {
		t.Fatalf("the demo does not answer through the Ingress, NodePort and ClusterIP of %s", n.Name)
	}
	return w
}

// PathResult is what the clients of one path saw.
type PathResult struct {
	Path string
	// Sent counts requests (or lookups) that completed, well or not.
	Sent int
	// Failed got no answer: refused, reset, timed out, SERVFAIL.
	Failed int
	// Wrong got an answer that is wrong for a healthy cluster: a non-2xx
	// status, or NXDOMAIN for a name that exists.
	Wrong int
	// Slowest is the longest single request: one that waited across a gap
	// in service shows it here.
	Slowest time.Duration
}

// UnderLoad runs hey with conc connections through every path of the
// workload's node and the resolver, calls disrupt, keeps the load on for
// settle more, and returns what each path saw.
func (c *Cluster) UnderLoad(t testing.TB, w ContinuityWorkload, conc int, settle time.Duration, disrupt func()) []PathResult {
	t.Helper()
	n := w.Node
	start := time.Now()
	dnsBefore := c.resolverTotals(t, time.Time{})
	cs := strconv.Itoa(conc)
	loads := []struct {
		path string
		hey  *Hey
	}{
		{"ingress http", StartHey(t, c.ClientNS, "", "-z", "30m", "-c", cs, "-host", "demo.localhost", "http://"+n.IP+"/")},
		{"ingress https", StartHey(t, c.ClientNS, "", "-z", "30m", "-c", cs, "-host", "demo.localhost", "https://"+n.IP+"/")},
		{"clusterip", StartHey(t, n.NS, n.CgroupDir(), "-z", "30m", "-c", cs, "http://"+w.ClusterIP+"/")},
		{"nodeport", StartHey(t, c.ClientNS, "", "-z", "30m", "-c", cs, fmt.Sprintf("http://%s:%d/", n.IP, w.NodePort))},
	}
	time.Sleep(2 * time.Second)
	disrupt()
	time.Sleep(settle)
	var out []PathResult
	for _, l := range loads {
		r := l.hey.Stop(t)
		res := PathResult{Path: l.path, Sent: r.Total() + r.Errors, Failed: r.Errors, Slowest: r.Slowest}
		res.Wrong = r.Total() - r.Codes[200]
		if res.Failed+res.Wrong > 0 {
			t.Logf("%s: hey reported:\n%s", l.path, r.Report)
		}
		out = append(out, res)
	}
	var dnsAfter dnsTotals
	// The kubelet serves the resolver's logs again once the node is back.
	if err := poll(2*time.Minute, func() bool {
		dnsAfter = c.resolverTotals(t, start)
		return dnsAfter.total > dnsBefore.total
	}); err != nil {
		t.Fatalf("the resolver pod's totals did not move: %+v", dnsAfter)
	}
	return append(out, PathResult{Path: "dns (pod)", Sent: dnsAfter.total - dnsBefore.total,
		Failed: dnsAfter.failed - dnsBefore.failed, Wrong: dnsAfter.wrong - dnsBefore.wrong,
		Slowest: time.Duration(dnsAfter.slowestMS) * time.Millisecond})
}

// RestartAgent stops the node's agent with stop (StopAgent or KillAgent),
// starts bin in its place and waits until the new agent's data plane has
// taken over from the running one.
func (n *Node) RestartAgent(t testing.TB, stop func(), bin string) {
	t.Helper()
	before, err := dataplane.ReadStatus(context.Background(), dataplane.SocketPath(n.Name))
	if err != nil {
		t.Fatalf("node %s's data plane: %v", n.Name, err)
	}
	stop()
	n.StartAgentBinary(bin)
	if err := poll(3*time.Minute, func() bool {
		st, err := dataplane.ReadStatus(context.Background(), dataplane.SocketPath(n.Name))
		return err == nil && st.PID != before.PID && st.Predecessor != nil && st.Predecessor.PID == before.PID
	}); err != nil {
		t.Fatalf("no new data plane took over from pid %d:\n%s", before.PID, n.agent.tail(30))
	}
}

// OutageOfServer stops the control plane for d, then starts it again.
func (c *Cluster) OutageOfServer(d time.Duration) {
	c.StopServer()
	time.Sleep(d)
	c.RestartServer()
}

// PodRestarts names every pod with its UID and restart counts, to compare
// before and after.
func (c *Cluster) PodRestarts(t testing.TB) string {
	t.Helper()
	return strings.TrimSpace(c.MustKubectl("get", "pods", "-A", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.containerStatuses[*].restartCount}{"\n"}{end}`))
}

// UpgradeVersion is the version string of UpgradeBinary's skiff.
const UpgradeVersion = "upgrade-test"

// UpgradeBinary is a skiff built from the same code with another version
// string, installed beside what `make build` puts next to bin (skiff-cni,
// the images): $SKIFF_UPGRADE_BINARY, or built here (a link step when the
// build cache is warm).
func UpgradeBinary(t testing.TB, bin string) string {
	t.Helper()
	if b := os.Getenv("SKIFF_UPGRADE_BINARY"); b != "" {
		return b
	}
	dir := t.TempDir()
	// The shipped containerd bundle too: the agent imports its images
	// with the ctr beside it, and a machine without Debian's containerd
	// has no other.
	for _, f := range []string{"skiff-cni", "images", containerd.BundleDir} {
		if err := os.Symlink(filepath.Join(filepath.Dir(bin), f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "skiff")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+UpgradeVersion, "-o", out, "github.com/skiffnet/skiff/cmd/skiff")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the upgrade binary: %v\n%s", err, b)
	}
	return out
}

// repoRoot is the module's root directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("find the repository root: %v", err)
	}
	return strings.TrimSpace(string(out))
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

// dnsTotals are the resolver's running totals, and its slowest lookup
// over the lines read.
type dnsTotals struct{ total, failed, wrong, slowestMS int }

var resolveLine = regexp.MustCompile(`resolve total=(\d+) failed=(\d+) wrong=(\d+) slowest_ms=(\d+)`)

// resolverTotals reads the resolver pod's latest running totals, with the
// slowest lookup since since (zero: the last line's), or zeros while its
// logs cannot be read.
func (c *Cluster) resolverTotals(t testing.TB, since time.Time) dnsTotals {
	t.Helper()
	args := []string{"logs", "resolver", "--tail", "5"}
	if !since.IsZero() {
		args = []string{"logs", "resolver", "--since-time", since.UTC().Format(time.RFC3339)}
	}
	out, err := c.Kubectl(args...)
	if err != nil {
		return dnsTotals{}
	}
	var d dnsTotals
	for _, m := range resolveLine.FindAllStringSubmatch(out, -1) {
		slowest := d.slowestMS
		for i, p := range []*int{&d.total, &d.failed, &d.wrong, &d.slowestMS} {
			*p, _ = strconv.Atoi(m[i+1])
		}
		d.slowestMS = max(d.slowestMS, slowest)
	}
	return d
}

// Hey is a hey load generator running until stopped.
type Hey struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// StartHey runs hey in ns (and cgroupDir, if set) until Stop.
func StartHey(t testing.TB, ns namespace, cgroupDir string, args ...string) *Hey {
	t.Helper()
	cmd, err := command(ns, cgroupDir, "hey", args...)
	if err != nil {
		t.Fatal(err)
	}
	h := &Hey{cmd: cmd}
	cmd.Stdout, cmd.Stderr = &h.out, &h.out
	err = cmd.Start()
	closeCgroupFD(cmd)
	if err != nil {
		t.Fatalf("start hey (apt-get install hey): %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return h
}

// Stop interrupts hey, which then prints its report (nsenter has exec'd
// hey, so the process is hey itself), and parses it.
func (h *Hey) Stop(t testing.TB) HeyResult {
	t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("interrupt hey: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		h.cmd.Process.Kill()
		<-done
		t.Fatalf("hey did not stop within 30 s of SIGINT:\n%s", h.out.String())
	}
	r, err := ParseHey(h.out.String())
	if err != nil {
		t.Fatalf("%v:\n%s", err, h.out.String())
	}
	return r
}

// HeyResult is hey's report: responses by status code, requests that got
// no response (refused, reset, timed out), and the slowest response.
type HeyResult struct {
	Codes   map[int]int
	Errors  int
	Slowest time.Duration
	Report  string
}

// Total counts responses.
func (r HeyResult) Total() int {
	n := 0
	for _, v := range r.Codes {
		n += v
	}
	return n
}

var (
	reportCodeLine    = regexp.MustCompile(`^\s*\[(\d{3})\]\s+(\d+) responses`)
	reportErrorLine   = regexp.MustCompile(`^\s*\[(\d+)\]\s+\S`)
	reportSlowestLine = regexp.MustCompile(`^\s*Slowest:\s+([0-9.]+) secs`)
)

// ParseHey reads hey's text report.
func ParseHey(out string) (HeyResult, error) {
	r := HeyResult{Codes: map[int]int{}, Report: out}
	if !strings.Contains(out, "Summary:") {
		return r, fmt.Errorf("no hey report")
	}
	section := ""
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "Status code distribution:"):
			section = "codes"
			continue
		case strings.HasPrefix(l, "Error distribution:"):
			section = "errors"
			continue
		case l != "" && !strings.HasPrefix(l, " "):
			section = ""
		}
		if m := reportSlowestLine.FindStringSubmatch(l); m != nil {
			s, _ := strconv.ParseFloat(m[1], 64)
			r.Slowest = time.Duration(s * float64(time.Second))
		} else if m := reportCodeLine.FindStringSubmatch(l); section == "codes" && m != nil {
			code, _ := strconv.Atoi(m[1])
			n, _ := strconv.Atoi(m[2])
			r.Codes[code] += n
		} else if m := reportErrorLine.FindStringSubmatch(l); section == "errors" && m != nil {
			n, _ := strconv.Atoi(m[1])
			r.Errors += n
		}
	}
	return r, nil
}
