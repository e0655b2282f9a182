// Command podnet measures the pod network across nodes against the network
// the nodes themselves share: on a 2-node test cluster (test/cluster) per
// mode, iperf3 TCP throughput and a TCP ping-pong's round-trip time from a
// pod on node 1 to a pod on node 2, and the same from node 1 to node 2 over
// the bridge that joins them, in the same run. It prints one table with
// pod/node ratios.
//
//	go run ./bench/podnet [-modes routed,vxlan] [-duration 5s] [-reps 5] [-pings 5000] [-cpus CLIENT,SERVER]
//
// It runs as root and sends traffic only inside the namespaces it creates;
// every namespace, process and directory it made is removed on exit (also
// on failure and Ctrl-C). `podnet pingpong` is the client it runs inside a
// namespace.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/skiffnet/skiff/test/cluster"
)

type options struct {
	modes    []string
	duration time.Duration
	reps     int
	pings    int
	size     int
	// cpus are the client's and the servers' CPUs ("" leaves them free).
	clientCPU, serverCPU string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "pingpong" {
		os.Exit(pingpongMain(os.Args[2:]))
	}
	var o options
	modes := flag.String("modes", "routed,vxlan", "pod network modes to measure, comma-separated")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of each iperf3 run")
	flag.IntVar(&o.reps, "reps", 5, "pairs of runs (pod and node, alternating which goes first); medians are reported")
	flag.IntVar(&o.pings, "pings", 5000, "round trips per ping-pong run")
	flag.IntVar(&o.size, "size", 64, "ping-pong message size in bytes")
	// Unpinned by default: on a VM, pinning client and server to different
	// vCPUs puts a cross-vCPU wake-up (~50 µs) into every round trip.
	cpus := flag.String("cpus", "", "CLIENT,SERVER: pin the clients and the servers to these CPUs (default: unpinned)")
	flag.Parse()
	if *cpus != "" {
		var ok bool
		if o.clientCPU, o.serverCPU, ok = strings.Cut(*cpus, ","); !ok {
			fatal(fmt.Errorf("-cpus %q: want CLIENT,SERVER such as 0,1", *cpus))
		}
	}
	o.modes = strings.Split(*modes, ",")
	if os.Geteuid() != 0 {
		fatal(errors.New("run as root: the bench builds network namespaces"))
	}
	for _, tool := range []string{"iperf3", "nsenter", "ip"} {
		if _, err := lookPath(tool); err != nil {
			fatal(fmt.Errorf("%s not found (apt-get install iperf3 util-linux iproute2)", tool))
		}
	}
	if os.Getenv("SKIFF_BINARY") == "" {
		fatal(errors.New("SKIFF_BINARY is not set: run bench/podnet/run.sh, or `make build` and set it to _output/skiff"))
	}

	r := &runner{}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "podnet: interrupted; cleaning up")
		r.cleanup()
		os.Exit(130)
	}()

	var rows []row
	ok := r.do(func() {
		for _, mode := range o.modes {
			rows = append(rows, measureMode(r, mode, o)...)
		}
	})
	r.cleanup()
	if !ok {
		os.Exit(1)
	}
	printTable(os.Stdout, rows, o)
}

// measureMode brings up a 2-node cluster in mode and measures both paths.
func measureMode(r *runner, mode string, o options) []row {
	logf("%s: starting a 2-node cluster", mode)
	c := cluster.Start(r, cluster.Options{Nodes: 2, PodNetwork: mode, WaitReady: true})
	pods := startPods(r, c)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	echo := filepath.Join(filepath.Dir(c.Bin), "bin", "echo-v1")
	// Every server runs in the bench's own cgroup, in the pod's or node's
	// network namespace, so both paths differ only in the network: the
	// pod's own echo server is BestEffort (cpu.weight 1) and would measure
	// CPU scheduling as soon as anything else runs on the machine.
	nodeSrv := endpoint{ns: n2.NS.Path(), ip: n2.IP}
	nodeCli := endpoint{ns: n1.NS.Path(), ip: n1.IP}
	podSrv := endpoint{ns: pods[1].netns, ip: pods[1].ip}
	podCli := endpoint{ns: pods[0].netns, ip: pods[0].ip}
	for _, s := range []endpoint{nodeSrv, podSrv} {
		r.background(s.ns, pinned(o.serverCPU, echo, "-http", s.ip+":18080", "-tcp", s.ip+":"+pingPort, "-udp", "")...)
		r.background(s.ns, pinned(o.serverCPU, "iperf3", "-s", "-B", s.ip, "-p", iperfPort)...)
		waitListen(r, s.ns, iperfPort)
		waitListen(r, s.ns, pingPort)
	}
	mtu := func(e endpoint, dev string) string { return linkMTU(r, e.ns, dev) }
	logf("%s: pod %s (%s, MTU %s) → pod %s (%s); node %s → node %s (MTU %s)", mode,
		pods[0].name, podCli.ip, mtu(podCli, "eth0"), pods[1].name, podSrv.ip, n1.IP, n2.IP, mtu(nodeCli, "eth0"))

	var node, pod sample
	// Paired runs, in alternating order, so that load from elsewhere on
	// the machine hits both paths alike; the ratios are taken per pair.
	for i := range o.reps {
		var nb, pb float64
		var nr, pr rtt
		if i%2 == 0 {
			nb, nr = iperf(r, nodeCli, nodeSrv, o), pingpong(r, nodeCli, nodeSrv, o)
			pb, pr = iperf(r, podCli, podSrv, o), pingpong(r, podCli, podSrv, o)
		} else {
			pb, pr = iperf(r, podCli, podSrv, o), pingpong(r, podCli, podSrv, o)
			nb, nr = iperf(r, nodeCli, nodeSrv, o), pingpong(r, nodeCli, nodeSrv, o)
		}
		logf("%s: run %d of %d: node %.2f Gbit/s, RTT p50 %.1f µs p99 %.1f µs; pod %.2f Gbit/s, RTT p50 %.1f µs p99 %.1f µs",
			mode, i+1, o.reps, nb/1e9, nr.p50, nr.p99, pb/1e9, pr.p50, pr.p99)
		node.add(nb, nr)
		pod.add(pb, pr)
	}
	res := []row{{mode: mode, path: "node-to-node", s: node}, {mode: mode, path: "pod-to-pod", s: pod, peer: &node}}
	// The cluster is not needed any more: stop it now rather than at exit,
	// so the next mode's cluster has the machine to itself.
	r.cleanup()
	return res
}

type endpoint struct{ ns, ip string }

// pinned is a command line run on cpu (through taskset) unless cpu is "".
func pinned(cpu string, cmd ...string) []string {
	if cpu == "" {
		return cmd
	}
	return append([]string{"taskset", "-c", cpu}, cmd...)
}

// The servers' ports, in the namespaces the bench measures between.
const (
	iperfPort = "5201"
	pingPort  = "9100"
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "podnet: "+format+"\n", args...)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "podnet:", err)
	os.Exit(1)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
