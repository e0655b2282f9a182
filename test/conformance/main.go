// Command conformance runs upstream Kubernetes' e2e suite (its own e2e.test
// binary, unchanged) against a multi-node Skiff test cluster on this
// machine. `make conformance` builds the upstream programs and calls it:
//
//	conformance -tools _output/conformance [-focus RE] [-skip RE] [-parallel 4]
//
// It starts the cluster (test/cluster, the server with --disable-agent),
// builds the e2e test images and mirrors them into the cluster's registry
// (KUBE_TEST_REPO_LIST points the tests at it), runs the focus in parallel
// and then its [Serial] tests one at a time, writes the JUnit reports and a
// summary, and removes the cluster.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/skiffnet/skiff/test/cluster"
	"github.com/skiffnet/skiff/test/conformance/e2eimages"
	"github.com/skiffnet/skiff/test/harness"
)

type options struct {
	tools, out   string
	focus, skip  string
	nodes        int
	parallel     int
	serial, keep bool
	timeout      time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.tools, "tools", "_output/conformance", "directory with e2e.test, ginkgo and the test images' programs (make conformance builds them)")
	flag.StringVar(&o.out, "out", "", "directory for the JUnit reports, logs and summary (default TOOLS/results/TIME)")
	flag.StringVar(&o.focus, "focus", `\[Conformance\]`, "regular expression of the tests to run")
	flag.StringVar(&o.skip, "skip", "", "regular expression of tests to leave out")
	flag.IntVar(&o.nodes, "nodes", 3, "agent nodes in the test cluster")
	flag.IntVar(&o.parallel, "parallel", 4, "tests run at once in the parallel pass")
	flag.BoolVar(&o.serial, "serial", true, "after the parallel pass, run the focus's [Serial] tests one at a time")
	flag.BoolVar(&o.keep, "keep", false, "leave the cluster running afterwards (stop it with Ctrl-C)")
	flag.DurationVar(&o.timeout, "timeout", 6*time.Hour, "time limit of each pass")
	packages := flag.Bool("packages", false, "print the Debian packages the test images are made from, and exit")
	flag.Parse()
	if *packages {
		fmt.Println(strings.Join(e2eimages.Packages, " "))
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	tools, err := findTools(o.tools)
	if err != nil {
		return err
	}
	if o.out == "" {
		o.out = filepath.Join(o.tools, "results", time.Now().UTC().Format("20060102-150405"))
	}
	// ginkgo runs e2e.test in directories of its own: every path handed
	// to them (the image list, the kubeconfig, the reports) must be absolute.
	if o.out, err = filepath.Abs(o.out); err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	r := &harness.Runner{}
	defer r.RunCleanups()
	// Ctrl-C reaches ginkgo too (it stops the tests and writes its
	// reports); this program then removes the cluster as after a normal end.
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, syscall.SIGINT, syscall.SIGTERM)
	stopped := func() bool {
		select {
		case <-interrupted:
			return true
		default:
			return false
		}
	}

	var c *cluster.Cluster
	start := time.Now()
	fmt.Printf("starting a %d-node test cluster (about a minute)\n", o.nodes)
	if !r.Do(func() { c = cluster.Start(r, cluster.Options{Nodes: o.nodes, WaitReady: true}) }) {
		return errors.New("the test cluster did not start (see above)")
	}
	fmt.Printf("cluster %s ready after %v; its logs: %s\n", c.ID, time.Since(start).Round(time.Second), c.Dir)
	repoList, err := mirrorImages(r, c, tools, o.out)
	if err != nil {
		return err
	}
	if stopped() {
		return errors.New("interrupted")
	}
	results, err := runPasses(c, tools, repoList, o, stopped)
	if logErr := saveLogs(c.Dir, filepath.Join(o.out, "cluster-logs")); logErr != nil {
		fmt.Printf("saving the cluster's logs: %v\n", logErr)
	}
	if err != nil {
		return err
	}
	s, err := summarize(reportPaths(results), time.Since(start))
	if err != nil {
		return err
	}
	fmt.Print(s.String())
	if err := os.WriteFile(filepath.Join(o.out, "summary.md"), []byte(s.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("JUnit reports, logs (the cluster's in cluster-logs/) and summary.md: %s\n", o.out)
	if o.keep {
		fmt.Printf("the cluster stays up; kubectl: nsenter --net=%s %s kubectl --kubeconfig %s get nodes\nCtrl-C removes it\n",
			"/run/netns/"+string(c.Infra), c.Bin, c.Kubeconfig())
		<-interrupted
	}
	if s.Failed > 0 {
		return fmt.Errorf("%d of %d tests failed", s.Failed, s.Failed+s.Passed)
	}
	return passErrors(results, s)
}
