// Command dns benchmarks Skiff's cluster DNS against CoreDNS's `kubernetes`
// plugin on the same cluster, the same query mix and the same single core.
//
// It starts a fresh `skiff server --disable-agent` on loopback, creates a
// fixture set of Services and EndpointSlices, then runs three DNS servers
// against that server's admin kubeconfig, each under `taskset -c 1`:
// Skiff's DNS (this program's serve-skiff mode: dns/watch, dns/records,
// dns/server as the agent wires them) and CoreDNS with two Corefiles. It
// checks that all three give the same answers to every question of the
// mix, then measures each with dnsperf on the other core: throughput
// (unthrottled, median of several interleaved rounds) and latency (every
// query's round trip at a fixed rate well below each server's capacity).
//
//	go run ./bench/dns --skiff _output/skiff --coredns /path/to/coredns
//
// bench/dns/run.sh builds CoreDNS from its Go module and runs this as root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffnet/skiff/bench/skiffserver"
)

type options struct {
	skiff, coredns string
	services       int
	queries        int
	duration       time.Duration
	rounds         int
	latencyQPS     int
	latencyFor     time.Duration
	serverCPU      int
	clientCPU      int
	outstanding    int
	nice           int
	fifo           bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-skiff" {
		if err := serveSkiff(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "serve-skiff:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.StringVar(&o.skiff, "skiff", os.Getenv("SKIFF_BINARY"), "skiff binary that runs the API server")
	flag.StringVar(&o.coredns, "coredns", "", "coredns binary (bench/dns/run.sh builds it from the Go module)")
	flag.IntVar(&o.services, "services", 200, "Services in the fixture set (one in five headless)")
	flag.IntVar(&o.queries, "queries", 10000, "lines in the dnsperf query file")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "length of one throughput run")
	flag.IntVar(&o.rounds, "rounds", 3, "throughput runs per server, interleaved; the median is reported")
	flag.IntVar(&o.latencyQPS, "latency-qps", 5000, "fixed rate of the latency run")
	flag.DurationVar(&o.latencyFor, "latency-duration", 10*time.Second, "length of the latency run")
	flag.IntVar(&o.serverCPU, "server-cpu", 1, "the one CPU every DNS server is pinned to")
	flag.IntVar(&o.clientCPU, "client-cpu", 0, "the CPU dnsperf is pinned to")
	flag.IntVar(&o.outstanding, "outstanding", 100, "dnsperf's queries in flight (-q) in throughput runs")
	flag.IntVar(&o.nice, "nice", -19, "niceness of the DNS servers and dnsperf, each in a scheduler autogroup of its own (negative needs root)")
	flag.BoolVar(&o.fifo, "latency-fifo", true, "run the server under test and dnsperf as SCHED_FIFO during latency runs")
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted; every process was stopped and the temp dir removed")
		}
		fmt.Fprintln(os.Stderr, "bench/dns:", err)
		cancel()
		os.Exit(1)
	}
}

func (o options) validate() error {
	for _, b := range []struct{ flag, path string }{{"--skiff", o.skiff}, {"--coredns", o.coredns}} {
		if b.path == "" {
			return fmt.Errorf("%s is required", b.flag)
		}
		if _, err := os.Stat(b.path); err != nil {
			return fmt.Errorf("%s: %w", b.flag, err)
		}
	}
	if o.services < 10 || o.queries < 100 || o.rounds < 1 || o.latencyQPS < 1 {
		return errors.New("want --services ≥ 10, --queries ≥ 100, --rounds ≥ 1, --latency-qps ≥ 1")
	}
	if o.serverCPU == o.clientCPU {
		return errors.New("--server-cpu and --client-cpu must differ")
	}
	return nil
}

func run(ctx context.Context, o options) error {
	if err := o.validate(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "skiff-bench-dns-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	self, err := os.Executable()
	if err != nil {
		return err
	}

	step("starting skiff server --disable-agent")
	api, err := skiffserver.Start(ctx, o.skiff, tmp)
	if err != nil {
		return err
	}
	defer api.Close()
	cfg, err := clientcmd.BuildConfigFromFlags("", api.Kubeconfig())
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	step("creating %d Services with EndpointSlices", o.services)
	fix, err := createFixtures(ctx, cs, o.services)
	if err != nil {
		return err
	}
	mix := fix.mix()
	qfile := filepath.Join(tmp, "queries.txt")
	qs, err := writeQueries(qfile, mix, o.queries)
	if err != nil {
		return err
	}

	// Every server runs for the whole benchmark, idle while another is
	// measured: an idle informer costs nothing measurable.
	var servers []*dnsServer
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	ports, err := skiffserver.FreePorts(1)
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	s, err := startDNSServer("skiff", addr, tmp, o.serverCPU, o.nice, self, "serve-skiff", "--kubeconfig", api.Kubeconfig(), "--listen", addr)
	if err != nil {
		return err
	}
	servers = append(servers, s)
	for _, c := range corefiles {
		path, port, err := c.write(tmp, api.Kubeconfig())
		if err != nil {
			return err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		s, err := startDNSServer(c.name, addr, tmp, o.serverCPU, o.nice, o.coredns, "-conf", path)
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	last := len(fix.clusterIP) - 1
	probe := []question{
		{fix.clusterIP[last] + "." + namespace + ".svc.cluster.local.", 1},
		{fix.headless[len(fix.headless)-1] + "." + namespace + ".svc.cluster.local.", 1},
		{fix.hostnames[len(fix.hostnames)-1], 1},
	}
	for _, s := range servers {
		step("waiting for %s on %s", s.Name, s.addr)
		if err := waitServing(ctx, s, probe); err != nil {
			return err
		}
	}
	step("comparing answers")
	diffs, distinct, err := compareAnswers(servers, qs)
	if err != nil {
		return err
	}
	if len(diffs) > 0 {
		for _, d := range diffs[:min(10, len(diffs))] {
			fmt.Fprintln(os.Stderr, d)
		}
		return fmt.Errorf("servers disagree on %d of %d distinct questions (first 10 above)", len(diffs), distinct)
	}

	rep := &report{o: o, mix: mix, distinct: distinct, servers: servers}
	if out, err := exec.Command(o.coredns, "-version").Output(); err == nil {
		rep.coredns, _, _ = strings.Cut(string(out), "\n")
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		rep.load = strings.Join(f[:min(3, len(f))], " ")
	}
	if err := measure(ctx, o, qfile, servers, rep); err != nil {
		return err
	}
	for _, s := range servers {
		if err := s.Alive(); err != nil {
			return err
		}
	}
	rep.print(os.Stdout)
	return nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/dns: "+format+"\n", args...)
}
