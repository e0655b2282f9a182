package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiffnet/skiff/agent/cleanup"
	"github.com/skiffnet/skiff/cni/routes"
	"github.com/skiffnet/skiff/ingress/gatewayaddr"
	"github.com/skiffnet/skiff/test/harness"
)

// The machine-wide paths a node uses whatever its flags say (containerd's
// default socket dir /run/skiff/NODE, the shims' sockets, the kubelet's
// device plugin socket and log links, pod network namespaces) and the bpf
// filesystem. The test's node runs in a mount namespace of its own with a
// fresh tmpfs (bpffs) on each, so what it leaves there is its own, other
// Skiff nodes on the machine are not disturbed, and whatever the test leaves
// goes with the namespace.
var hostDirs = []string{"/run/skiff", "/run/containerd", "/var/lib/kubelet", "/var/log/containers", "/run/netns"}

const bpffs = "/sys/fs/bpf"

// TestUninstall is the clean-stop acceptance point: `skiff uninstall
// --keep-data` (what `make stop` runs) and `skiff uninstall` leave no
// processes, mounts, files under /run/skiff or /run/containerd, nothing in
// /var/lib/kubelet, no BPF pins or empty bpffs directories, no routes and no
// nftables table; with --keep-data a restart brings the node and its pods
// back. On the way, an agent started over the node's state with another
// cluster's token refuses, and leaves the pinned data plane alone.
func TestUninstall(t *testing.T) {
	c := startControlPlane(t)
	n := c.AddHost()
	mnt, baseline := privateMounts(t)
	data := harness.TempDir(t, "uninstall-"+c.ID) // like /var/lib/skiff: the node's state under agent/
	units := harness.TempDir(t, "uninstall-units-"+c.ID)
	// Runs before the mount namespace goes, whatever failed: end what the
	// node left running.
	t.Cleanup(func() {
		killCgroup(n.CgroupDir())
		removeCgroups("skiff-" + n.Name)
	})
	startAgent := func(token string) {
		t.Helper()
		n.agent = start(t, n.NS, "", filepath.Join(c.Dir, n.Name+".out"), "nsenter", "--mount="+mnt, "--",
			c.Bin, "agent", "--server", c.ServerURL(), "--token", token, "--node-name", n.Name, "--node-ip", n.IP,
			"--data-dir", filepath.Join(data, "agent"), "--lb-cgroup", "/skiff-"+n.Name)
	}
	uninstall := func(args ...string) {
		t.Helper()
		out, err := output(n.NS, "", "nsenter", append([]string{"--mount=" + mnt, "--", c.Bin, "uninstall",
			"--data-dir", data, "--node", n.Name, "--root", units}, args...)...)
		t.Logf("skiff uninstall %s:\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Fatal(err)
		}
	}

	startAgent(c.Token())
	c.waitNodes(true)
	for _, p := range []string{"first", "second"} {
		c.MustKubectl("run", p, "--image", "skiff.local/echo:v1")
	}
	c.WaitPod(t, "first", podReady)
	c.WaitPod(t, "second", podReady)
	before := containerID(t, c, "first")

	// What the checks below look for is there while the node runs, so
	// they can fail.
	running := strings.Join(leftovers(t, c, n, mnt, baseline, data, true), "\n")
	for _, want := range []string{"mount /run/skiff/" + n.Name + "/", "mount " + data + "/", "file /run/skiff/" + n.Name + "/s/",
		"file /var/lib/kubelet/device-plugins/kubelet.sock", "file /var/log/containers/", "file /run/netns/cni-",
		"pinned BPF link " + bpffs + "/skiff/" + n.Name + "/", "pinned BPF map", "link sk", "nftables table", "cgroup "} {
		if !strings.Contains(running, want) {
			t.Errorf("the running node shows no %q: the check for it would find nothing:\n%s", want, running)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Bad input: the node's state is cluster A's; a token of cluster B (a
	// CA hash that is not A's) is refused before the data plane is touched.
	n.StopAgent()
	pins := find(t, mnt, filepath.Join(bpffs, "skiff", n.Name))
	if len(pins) == 0 {
		t.Fatal("no BPF pins of the stopped node: the data plane should stay pinned across agent restarts")
	}
	_, boot, _ := strings.Cut(c.Token(), "::")
	startAgent("K10" + strings.Repeat("ab", 32) + "::" + boot)
	select {
	case <-n.agent.exited:
	case <-time.After(time.Minute):
		t.Fatalf("the agent with another cluster's token still runs:\n%s", n.agent.tail(20))
	}
	out := n.agent.output()
	for _, want := range []string{"--token", "another cluster", "skiff uninstall"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, n.agent.tail(20))
		}
	}
	if after := find(t, mnt, filepath.Join(bpffs, "skiff", n.Name)); strings.Join(after, " ") != strings.Join(pins, " ") {
		t.Errorf("the refused agent changed the node's BPF pins: %v, were %v", after, pins)
	}
	if body := c.PodGet(t, "first", "/"); body == "" {
		t.Error("the pod stopped answering after the refused start")
	}

	// `make stop`: everything goes but the data.
	uninstall("--keep-data")
	assertClean(t, c, n, mnt, baseline, data, true)

	// The next start brings the node and its pods back, with new containers.
	startAgent(c.Token())
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 3*time.Minute, true, func(context.Context) (bool, error) {
		id := containerID(t, c, "first")
		return id != "" && id != before && podReady(c.GetPod(t, "first")), nil
	})
	if err != nil {
		t.Fatalf("after uninstall --keep-data and a restart, pod first did not run again: %v\n%s", err, n.agent.tail(30))
	}
	c.WaitPod(t, "second", podReady)
	if body := c.PodGet(t, "first", "/"); body == "" {
		t.Error("the restarted pod does not answer")
	}

	// `skiff uninstall` of a running node: nothing is left, data included.
	uninstall()
	assertClean(t, c, n, mnt, baseline, data, false)
}

// startControlPlane is a test cluster's server, without nodes.
func startControlPlane(t *testing.T) *Cluster {
	t.Helper()
	harness.RequireRoot(t)
	c := &Cluster{t: t, ID: newID(), Bin: harness.Binary(t), opts: Options{PodNetwork: "routed"}}
	c.Dir = harness.TempDir(t, "cluster-"+c.ID)
	t.Cleanup(func() { cleanup.UnmountUnder(c.Dir) })
	c.Infra = buildBridge(t, c.ID)
	c.startServer()
	return c
}

// privateMounts starts a process in a new mount namespace (private
// propagation) with a fresh tmpfs on each of hostDirs and a fresh bpffs, and
// returns the namespace's path for nsenter --mount and the IDs of the mounts
// it starts with. The namespace, and all mounts in it, go when the test ends.
func privateMounts(t *testing.T) (string, map[string]bool) {
	t.Helper()
	for _, d := range append(hostDirs, bpffs) {
		if _, err := os.Stat(d); err == nil {
			continue
		}
		// A mount point must exist on the host; removed afterwards if it
		// is still empty (something else may have started using it).
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Rmdir(d) })
	}
	script := "set -e\n"
	for _, d := range hostDirs {
		script += "mount -t tmpfs -o mode=0755 skiff-test " + d + "\n"
	}
	script += "mount -t bpf -o mode=0700 bpf " + bpffs + "\necho ready\nexec sleep infinity\n"
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr harness.Output
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("private mount namespace: %q %s", line, stderr.String())
	}
	mnt := fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)
	// The host's mounts were copied into the namespace, other nodes' under
	// /run/netns and /run/skiff included (hidden under the tmpfs): they
	// are not the test node's.
	ids, err := inMounts(mnt, "findmnt", "-rn", "-o", "ID")
	if err != nil {
		t.Fatal(err)
	}
	baseline := map[string]bool{}
	for _, id := range strings.Fields(ids) {
		baseline[id] = true
	}
	return mnt, baseline
}

// leftovers lists what of a Skiff node is on the machine, as a person
// would look: findmnt, find, ip, nft, bpftool and the cgroup tree.
func leftovers(t *testing.T, c *Cluster, n *Node, mnt string, baseline map[string]bool, data string, keepData bool) []string {
	t.Helper()
	var out []string
	// Mounts: container root filesystems and shm under /run/skiff, pod
	// volumes under the data dir, pod network namespaces.
	mounts, err := inMounts(mnt, "findmnt", "-rn", "-o", "ID,TARGET")
	if err != nil {
		t.Fatal(err)
	}
	watched := append([]string{data, bpffs}, hostDirs...)
	for _, l := range strings.Split(mounts, "\n") {
		if id, target, ok := strings.Cut(l, " "); ok && !baseline[id] && under(target, watched) {
			out = append(out, "mount "+target)
		}
	}
	// Files: anything under the machine-wide dirs (each a fresh tmpfs or
	// bpffs, so anything there is the node's).
	for _, d := range append(hostDirs, bpffs) {
		for _, f := range find(t, mnt, d) {
			// The kernel's own iterators, in every bpffs (bpf_preload).
			if f != bpffs+"/maps.debug" && f != bpffs+"/progs.debug" {
				out = append(out, "file "+f)
			}
		}
	}
	if keepData {
		if _, err := os.Stat(filepath.Join(data, "agent", n.Name, "ca.crt")); err != nil {
			out = append(out, "the kept node state is gone: "+err.Error())
		}
	} else if _, err := os.Stat(data); err == nil {
		out = append(out, "data dir "+data)
	}
	// Pinned BPF objects the kernel still holds.
	for _, kind := range []string{"prog", "map", "link"} {
		j, err := inMounts(mnt, "bpftool", "-j", "-f", kind, "show")
		if err != nil {
			t.Fatal(err)
		}
		var objs []struct {
			Pinned []string `json:"pinned"`
		}
		if err := json.Unmarshal([]byte(j), &objs); err != nil {
			t.Fatalf("bpftool %s show: %v: %s", kind, err, j)
		}
		for _, o := range objs {
			for _, p := range o.Pinned {
				out = append(out, "pinned BPF "+kind+" "+p)
			}
		}
	}
	// Network: the node namespace holds only what the test gave it.
	links, err := output(n.NS, "", "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(links), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] != "lo:" && !strings.HasPrefix(f[1], "eth0@") {
			out = append(out, "link "+f[1])
		}
	}
	for _, proto := range []string{fmt.Sprint(int(routes.Proto)), fmt.Sprint(int(gatewayaddr.Proto))} {
		rs, err := output(n.NS, "", "ip", "route", "show", "table", "all", "proto", proto)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range strings.Split(strings.TrimSpace(rs), "\n") {
			if r != "" {
				out = append(out, "route "+r)
			}
		}
	}
	tables, err := output(n.NS, "", "nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(tables, routes.Table) {
		out = append(out, "nftables table "+routes.Table)
	}
	// Processes: the node's cgroup subtree.
	if _, err := os.Stat(n.CgroupDir()); err == nil {
		out = append(out, "cgroup "+n.CgroupDir())
	}
	return out
}

func assertClean(t *testing.T, c *Cluster, n *Node, mnt string, baseline map[string]bool, data string, keepData bool) {
	t.Helper()
	if l := leftovers(t, c, n, mnt, baseline, data, keepData); len(l) > 0 {
		t.Fatalf("skiff uninstall (keep data: %v) left %d things:\n%s", keepData, len(l), strings.Join(l, "\n"))
	}
}

// under reports whether p is strictly below one of dirs.
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// find lists what is below dir in the mount namespace.
func find(t *testing.T, mnt, dir string) []string {
	t.Helper()
	out, err := inMounts(mnt, "sh", "-c", `[ ! -e "$1" ] || find "$1" -mindepth 1`, "sh", dir)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

func inMounts(mnt string, name string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--mount=" + mnt, "--", name}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func containerID(t *testing.T, c *Cluster, pod string) string {
	t.Helper()
	p, err := c.Client().CoreV1().Pods("default").Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil || len(p.Status.ContainerStatuses) == 0 {
		return ""
	}
	return p.Status.ContainerStatuses[0].ContainerID
}
