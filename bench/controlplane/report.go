package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything one run measured.
type report struct {
	opts         options
	version      string
	readyWall    time.Duration
	readySelf    string
	idleRSS      uint64
	peakRSS      uint64
	api          apiLatency
	etcd         etcdLatency
	sched        schedulerResult
	taintedNodes int
	untaintWait  time.Duration // nodes created → all Ready and untainted
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "skiff control-plane benchmark, %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "machine: %d CPUs (%s); skiff %s\n\n", runtime.NumCPU(), cpuModel(), r.version)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tskiff\tetcd direct\tskiff/etcd\t")
	fmt.Fprintf(tw, "time to ready (exec to ready line)\t%.2f s\t\t\t\n", r.readyWall.Seconds())
	fmt.Fprintf(tw, "idle RSS (%s after ready)\t%s\t\t\t\n", r.opts.idle, mib(r.idleRSS))
	r.latencyRow(tw, "ConfigMap create p50", r.api.create, r.etcd.put, 50)
	r.latencyRow(tw, "ConfigMap create p99", r.api.create, r.etcd.put, 99)
	r.latencyRow(tw, "ConfigMap get p50", r.api.get, r.etcd.get, 50)
	r.latencyRow(tw, "ConfigMap get p99", r.api.get, r.etcd.get, 99)
	fmt.Fprintf(tw, "scheduler throughput (%d pods, %d nodes)\t%.1f pods/s\t\t\t\n",
		r.sched.pods, r.opts.nodes, r.sched.podsPerSecond())
	fmt.Fprintf(tw, "  all pods bound after\t%.2f s\t\t\t\n", r.sched.bound.Seconds())
	fmt.Fprintf(tw, "  nodes that received pods\t%d of %d\t\t\t\n", r.sched.nodesUsed, r.opts.nodes)
	fmt.Fprintf(tw, "  all pods created after\t%.2f s\t\t\t\n", r.sched.created.Seconds())
	fmt.Fprintf(tw, "peak RSS (end of run)\t%s\t\t\t\n", mib(r.peakRSS))
	tw.Flush()

	fmt.Fprintf(w, "\nlatencies: %d sequential requests each; \"etcd direct\" is the server's own embedded etcd\n", r.opts.ops)
	fmt.Fprintln(w, "reached with go.etcd.io/etcd/client/v3 (create = put-if-absent txn, get = linearizable read),")
	fmt.Fprintln(w, "the floor under the API path. No other control plane (k3s, kubeadm) is available offline on")
	fmt.Fprintln(w, "this machine, so there is no peer column.")
	fmt.Fprintf(w, "server reported itself ready in %s; %d of %d nodes were tainted or not Ready at the end\n",
		r.readySelf, r.taintedNodes, r.opts.nodes)
	fmt.Fprintf(w, "(the benchmark renews their Leases every 10 s, as kubelets do, and started the pods only once\n")
	fmt.Fprintf(w, "all nodes had lost their initial not-ready taint, %.1f s after they were created).\n", r.untaintWait.Seconds())
}

func (r *report) latencyRow(w io.Writer, name string, api, etcd latencies, p float64) {
	a, e := api.percentile(p), etcd.percentile(p)
	ratio := "-"
	if e > 0 {
		ratio = fmt.Sprintf("%.1fx", float64(a)/float64(e))
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t\n", name, ms(a), ms(e), ratio)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
