package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffnet/skiff/test/cluster"
)

// pass is one ginkgo run over the focus.
type pass struct {
	name     string
	parallel int
	labels   string // ginkgo --label-filter
}

// passes splits the focus as upstream's conformance runs do: everything
// that may share the cluster in parallel, then the [Serial] and
// [Disruptive] tests one at a time.
func passes(o options) []pass {
	ps := []pass{{name: "parallel", parallel: o.parallel, labels: "!Serial && !Disruptive"}}
	if o.serial {
		ps = append(ps, pass{name: "serial", parallel: 1, labels: "Serial || Disruptive"})
	}
	return ps
}

// passResult is one pass's JUnit report and how its ginkgo ended.
type passResult struct {
	name, report, log string
	err               error // ginkgo's exit
}

func reportPaths(rs []passResult) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.report)
	}
	return out
}

// passErrors fails a run whose tests all passed but whose ginkgo did not
// (the suite could not start, say), or that ran no test at all: a green
// summary of nothing must not read as a pass.
func passErrors(rs []passResult, s summary) error {
	for _, r := range rs {
		if r.err != nil {
			return fmt.Errorf("the %s pass failed outside any test (ginkgo: %v); see %s", r.name, r.err, r.log)
		}
	}
	if s.Passed == 0 {
		return errors.New("no test ran: check -focus and -skip, and the passes' logs")
	}
	return nil
}

// runPasses runs each pass from the cluster's client namespace (a machine
// on the nodes' network, outside the cluster, as a person's laptop would
// be) and returns what each pass wrote.
func runPasses(c *cluster.Cluster, t tools, repoList string, o options, stopped func() bool) ([]passResult, error) {
	kubeconfig, err := clientKubeconfig(c, o.out)
	if err != nil {
		return nil, err
	}
	var results []passResult
	for _, p := range passes(o) {
		// After Ctrl-C the pass that was running has stopped and written
		// its report; the next one must not start.
		if stopped() {
			fmt.Printf("interrupted: the %s pass does not start\n", p.name)
			break
		}
		report := filepath.Join(o.out, "junit_"+p.name+".xml")
		args := []string{"netns", "exec", string(c.ClientNS), t.ginkgo,
			"--nodes=" + strconv.Itoa(p.parallel), "--timeout=" + o.timeout.String(),
			"--focus=" + o.focus, "--label-filter=" + p.labels, "--no-color", "--silence-skips",
			"--output-dir=" + o.out, "--junit-report=" + filepath.Base(report),
		}
		if o.skip != "" {
			args = append(args, "--skip="+o.skip)
		}
		args = append(args, t.e2eTest, "--",
			"--kubeconfig="+kubeconfig, "--provider=skeleton", "--num-nodes="+strconv.Itoa(len(c.Nodes)),
			"--kubectl-path="+t.kubectl, "--report-dir="+filepath.Join(o.out, p.name), "--dns-domain=cluster.local")
		logPath := filepath.Join(o.out, p.name+".log")
		log, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command("ip", args...)
		cmd.Stdout, cmd.Stderr = log, log
		cmd.Env = append(os.Environ(), "KUBE_TEST_REPO_LIST="+repoList)
		fmt.Printf("%s pass: %d at a time, labels %q; log: %s\n", p.name, p.parallel, p.labels, logPath)
		start := time.Now()
		err = cmd.Run()
		log.Close()
		fmt.Printf("%s pass done in %v (%v)\n", p.name, time.Since(start).Round(time.Second), exitText(err))
		if _, statErr := os.Stat(report); statErr != nil {
			return nil, fmt.Errorf("the %s pass wrote no JUnit report (%v); see %s", p.name, err, logPath)
		}
		results = append(results, passResult{name: p.name, report: report, log: logPath, err: err})
	}
	return results, nil
}

// clientKubeconfig is the admin kubeconfig with the server's address on the
// nodes' network, where the client namespace reaches it (the harness's own
// names the server's loopback address).
func clientKubeconfig(c *cluster.Cluster, dir string) (string, error) {
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig())
	if err != nil {
		return "", err
	}
	for _, cl := range cfg.Clusters {
		cl.Server = c.ServerURL()
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

func exitText(err error) string {
	if err == nil {
		return "every test passed"
	}
	return "ginkgo: " + err.Error()
}
