// Command controlplane benchmarks `skiff server`: it starts a fresh server in
// a temp dir on free loopback ports and prints its time to ready, idle RSS,
// ConfigMap create/get latency (next to the raw latency of the same embedded
// etcd, the floor under them), and scheduler throughput over Node objects
// that have no agents behind them.
//
//	go run ./bench/controlplane [--skiff _output/skiff] [--pods 1000] [--nodes 100] [--ops 1000]
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
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffnet/skiff/bench/skiffserver"
)

type options struct {
	skiff string
	pods  int
	nodes int
	ops   int
	idle  time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.skiff, "skiff", defaultBinary(), "skiff binary to benchmark ($SKIFF_BINARY, else _output/skiff of this repository)")
	flag.IntVar(&o.pods, "pods", 1000, "pods the scheduler binds")
	flag.IntVar(&o.nodes, "nodes", 100, "Node objects (no agents) the pods are spread over")
	flag.IntVar(&o.ops, "ops", 1000, "ConfigMap creates and gets (and etcd puts and gets) to time")
	flag.DurationVar(&o.idle, "idle", 10*time.Second, "how long the server idles after ready before its RSS is read")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted; the server was stopped and its temp dir removed")
		}
		fmt.Fprintln(os.Stderr, "bench/controlplane:", err)
		stop()
		os.Exit(1)
	}
}

func (o options) validate() error {
	if _, err := os.Stat(o.skiff); err != nil {
		return fmt.Errorf("--skiff %s: %w; run `make build` first or set SKIFF_BINARY", o.skiff, err)
	}
	if o.pods < 1 || o.nodes < 1 || o.ops < 1 {
		return errors.New("--pods, --nodes and --ops must each be at least 1")
	}
	if o.pods > o.nodes*110 {
		return fmt.Errorf("--pods %d do not fit on --nodes %d (110 pods each); raise --nodes", o.pods, o.nodes)
	}
	return nil
}

func run(ctx context.Context, o options) error {
	if err := o.validate(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "starting %s server ...\n", o.skiff)
	srv, err := skiffserver.Start(ctx, o.skiff, "")
	if err != nil {
		return err
	}
	defer srv.Close()

	rep, err := measure(ctx, srv, o)
	if err != nil {
		return fmt.Errorf("%w\nlast server output:\n%s", err, srv.Tail())
	}
	rep.print(os.Stdout)
	return nil
}

// measure runs every measurement against a started server, in an order that
// keeps each one from disturbing the next: idle memory first, then the
// latency of single requests, then the scheduler under load.
func measure(ctx context.Context, srv *skiffserver.Server, o options) (*report, error) {
	rep := &report{opts: o, version: binaryVersion(o.skiff), readyWall: srv.ReadyWall, readySelf: srv.ReadySelf}

	fmt.Fprintf(os.Stderr, "ready in %.1fs; idling %s ...\n", srv.ReadyWall.Seconds(), o.idle)
	select {
	case <-time.After(o.idle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var err error
	if rep.idleRSS, _, err = srv.Memory(); err != nil {
		return nil, err
	}

	client, err := newClient(srv.Kubeconfig())
	if err != nil {
		return nil, err
	}
	const ns = "skiff-bench"
	if err := createNamespace(ctx, client, ns); err != nil {
		return nil, err
	}

	fmt.Fprintf(os.Stderr, "timing %d ConfigMap creates and gets ...\n", o.ops)
	if rep.api, err = measureConfigMaps(ctx, client, ns, o.ops); err != nil {
		return nil, err
	}
	endpoint, err := srv.EtcdEndpoint()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "timing %d etcd puts and gets at %s ...\n", o.ops, endpoint)
	if rep.etcd, err = measureEtcd(ctx, endpoint, o.ops); err != nil {
		return nil, err
	}

	fmt.Fprintf(os.Stderr, "creating %d nodes and binding %d pods ...\n", o.nodes, o.pods)
	nodes, err := createFakeNodes(ctx, client, o.nodes)
	if err != nil {
		return nil, err
	}
	renewCtx, stopRenew := context.WithCancel(ctx)
	defer stopRenew()
	renewErrs := make(chan error, 1)
	go nodes.renew(renewCtx, renewErrs)
	begin := time.Now()
	if err := nodes.waitSchedulable(ctx); err != nil {
		return nil, err
	}
	rep.untaintWait = time.Since(begin)

	if rep.sched, err = measureScheduler(ctx, client, ns, o.pods); err != nil {
		return nil, err
	}
	stopRenew()
	select {
	case err := <-renewErrs:
		return nil, err
	default:
	}
	if rep.taintedNodes, err = nodes.tainted(ctx); err != nil {
		return nil, err
	}
	if _, rep.peakRSS, err = srv.Memory(); err != nil {
		return nil, err
	}
	return rep, nil
}

func newClient(kubeconfig string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", kubeconfig, err)
	}
	// client-go's default 5 QPS would measure the client, not the server.
	rc.QPS, rc.Burst = 10000, 10000
	return kubernetes.NewForConfig(rc)
}

// defaultBinary is $SKIFF_BINARY, or _output/skiff at the root of the
// repository the benchmark runs in.
func defaultBinary() string {
	if bin := os.Getenv("SKIFF_BINARY"); bin != "" {
		return bin
	}
	dir, err := os.Getwd()
	if err != nil {
		return "_output/skiff"
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "_output", "skiff")
		}
		if filepath.Dir(d) == d {
			return filepath.Join(dir, "..", "..", "_output", "skiff")
		}
	}
}

// binaryVersion is the Kubernetes version the binary embeds. (`skiff
// --version` is not usable: an upstream package claims the flag.)
func binaryVersion(bin string) string {
	out, err := exec.Command(bin, "kubectl", "version", "--client").Output()
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return "(Kubernetes " + strings.TrimSpace(strings.TrimPrefix(first, "Client Version:")) + ")"
}
