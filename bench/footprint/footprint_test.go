// Package footprint measures what an idle Skiff node costs and how long
// one takes to come up (issue 17): a one-node test cluster (test/cluster:
// `skiff server --disable-agent` and one `skiff agent` in network
// namespaces) is started, timed until the node is Ready and its cluster
// DNS and ingress proxy answer, left idle, and then the resident memory of
// each of its processes is read. With PROFILE_DIR set, the server and the
// agent serve pprof (--profile-addr) and their heap profiles are saved
// there.
//
//	bench/footprint/run.sh      (as root, after make build)
package footprint

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffnet/skiff/test/cluster"
)

// profileAddr is where the server and the agent serve pprof, each on the
// loopback of its own network namespace.
const profileAddr = "127.0.0.1:6060"

func BenchmarkFootprint(b *testing.B) {
	idle := 60 * time.Second
	if s := os.Getenv("IDLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("IDLE=%q: %v", s, err)
		}
		idle = d
	}
	profiles := os.Getenv("PROFILE_DIR")
	opts := cluster.Options{Nodes: 1, WaitReady: true}
	if profiles != "" {
		opts.ServerArgs = []string{"--profile-addr", profileAddr}
		opts.AgentArgs = []string{"--profile-addr", profileAddr}
	}
	for b.Loop() {
		r := report{idle: idle}
		begin := time.Now()
		c := cluster.Start(b, opts)
		r.nodeReady = time.Since(begin)
		n := c.Nodes[0]
		r.serverReady = serverReady(b, c)
		r.dns = time.Since(begin) + waitFor(b, "cluster DNS", func() bool { return dnsAnswers(n) })
		r.ingress = time.Since(begin) + waitFor(b, "ingress proxy", func() bool { return ingressAnswers(c, n) })
		b.StopTimer()
		time.Sleep(idle)
		r.procs = processes(b, c.Dir)
		if st, err := os.Stat(c.Bin); err == nil {
			r.binary = st.Size()
		}
		if profiles != "" {
			saveHeap(b, c.Infra.Path(), filepath.Join(profiles, "server"))
			saveHeap(b, n.NS.Path(), filepath.Join(profiles, "agent"))
			keepLogs(b, profiles, filepath.Join(c.Dir, "server", "logs"), filepath.Join(c.Dir, "agents", "logs"))
		}
		r.steps = append(startupSteps(filepath.Join(c.Dir, "server", "logs", "server.log"), "server"),
			startupSteps(filepath.Join(c.Dir, "agents", "logs", "agent-"+n.Name+".log"), "agent")...)
		r.print(os.Stdout)
		b.ReportMetric(float64(r.rss("server")+r.rss("agent")+r.rss("dataplane"))/1e6, "server+agent-MB")
		b.ReportMetric(float64(r.rss("agent"))/1e6, "agent-MB")
		b.ReportMetric(r.ingress.Seconds(), "startup-s")
		b.StartTimer()
	}
}

// serverReady is the start-up time the server reported itself ("ready in
// X.Ys": from its start to its API answering and its controllers running).
func serverReady(b *testing.B, c *cluster.Cluster) time.Duration {
	out, err := os.ReadFile(filepath.Join(c.Dir, "server.out"))
	if err != nil {
		b.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(out), "ready in ")
	secs, _, _ := strings.Cut(rest, "s")
	d, err := time.ParseDuration(secs + "s")
	if !ok || err != nil {
		b.Fatalf("no ready line in the server's output:\n%s", out)
	}
	return d
}

// stepLine is a start-up step as the server and the agent log it.
var stepLine = regexp.MustCompile(`msg="?(.*?)"? since_start=(\S+)`)

// startupSteps reads the start-up steps a process logged, each with its
// time since that process started.
func startupSteps(path, who string) []step {
	b, err := os.ReadFile(path)
	if err != nil {
		return []step{{who: who, what: "(no log: " + err.Error() + ")"}}
	}
	var steps []step
	for line := range strings.Lines(string(b)) {
		m := stepLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		d, err := time.ParseDuration(m[2])
		if err != nil {
			continue
		}
		steps = append(steps, step{who: who, what: m[1], at: d})
	}
	return steps
}

// waitFor polls cond every 100 ms and returns how long it took to hold.
func waitFor(b *testing.B, what string, cond func() bool) time.Duration {
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > 2*time.Minute {
			b.Fatalf("%s not answering 2 minutes after the node was Ready", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(begin)
}

// dnsAnswers asks the node's cluster DNS, from the node, for the API
// server's Service, as a pod's resolver would.
func dnsAnswers(n *cluster.Node) bool {
	out, err := n.Exec("dig", "@"+n.IP, "+short", "+time=1", "+tries=1", "kubernetes.default.svc.cluster.local")
	return err == nil && strings.TrimSpace(out) == "10.96.0.1"
}

// ingressAnswers sends an HTTP request for a host no Ingress routes to the
// node's ingress proxy from outside the cluster: the proxy's own 404 shows
// it listens and has loaded its routes.
func ingressAnswers(c *cluster.Cluster, n *cluster.Node) bool {
	out, err := c.ClientExec("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
		"-H", "Host: footprint.invalid", "http://"+n.IP+"/")
	return err == nil && strings.TrimSpace(out) == "404"
}

// saveHeap saves the in-use heap profile of the process serving pprof at
// profileAddr in network namespace ns as PREFIX.heap (for go tool pprof),
// and its text form with the Go runtime's memory statistics as
// PREFIX.heap.txt.
func saveHeap(b *testing.B, ns, prefix string) {
	client := &http.Client{Transport: &http.Transport{DialContext: cluster.DialerIn(ns)}, Timeout: 30 * time.Second}
	if err := os.MkdirAll(filepath.Dir(prefix), 0o755); err != nil {
		b.Fatal(err)
	}
	// gc=1 collects first, so the profile shows what is live, not garbage.
	for path, query := range map[string]string{prefix + ".heap": "gc=1", prefix + ".heap.txt": "debug=1"} {
		resp, err := client.Get("http://" + profileAddr + "/debug/pprof/heap?" + query)
		if err != nil {
			b.Fatalf("heap profile from %s: %v", ns, err)
		}
		f, err := os.Create(path)
		if err == nil {
			_, err = io.Copy(f, resp.Body)
			f.Close()
		}
		resp.Body.Close()
		if err != nil {
			b.Fatalf("save %s: %v", path, err)
		}
	}
}

// keepLogs copies the logs in dirs to dst: the cluster's directory is
// removed when the run ends.
func keepLogs(b *testing.B, dst string, dirs ...string) {
	for _, dir := range dirs {
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, l := range logs {
			data, err := os.ReadFile(l)
			if err == nil {
				err = os.WriteFile(filepath.Join(dst, filepath.Base(l)), data, 0o644)
			}
			if err != nil {
				b.Fatalf("keep %s: %v", l, err)
			}
		}
	}
}

// proc is one process of the cluster.
type proc struct {
	pid  int
	role string // server, agent, dataplane, containerd, ...
	// rss is resident memory in bytes; file is the part of it that is
	// pages of files (mostly the skiff binary's own, which every skiff
	// process on the machine shares), anon the rest (heap, stacks).
	rss, anon, file int64
}

// processes finds the cluster's processes (those whose command line names
// its directory) and reads their resident memory.
func processes(b *testing.B, dir string) []proc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	var ps []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmdline), dir) {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		role := filepath.Base(args[0])
		if role == "nsenter" {
			continue // exec'd into the process it runs; a leftover is not the cluster's
		}
		if role == filepath.Base(os.Getenv("SKIFF_BINARY")) && len(args) > 1 {
			role = args[1]
		}
		p := proc{pid: pid, role: role}
		p.rss, p.anon, p.file = memory(pid)
		ps = append(ps, p)
	}
	return ps
}

// memory reads a process's resident memory (VmRSS, what ps and top show)
// and its anonymous and file-backed parts, in bytes.
func memory(pid int) (rss, anon, file int64) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0
	}
	for line := range strings.Lines(string(status)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "RssAnon:":
			anon = kb << 10
		case "RssFile:", "RssShmem:":
			file += kb << 10
		}
	}
	return rss, anon, file
}
