// Command testcluster runs the multi-node test cluster of test/cluster
// outside `go test`, for a person to poke at:
//
//	testcluster up [-nodes 3] [-pod-network routed]   # starts it in the background
//	testcluster down                                   # stops it and removes all it made
//
// `make cluster NODES=3` and `make cluster-down` call it.
package main

import (
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

	"github.com/skiffnet/skiff/test/cluster"
	"github.com/skiffnet/skiff/test/harness"
)

// stateDir records the running cluster: its PID and what to tell a person.
const stateDir = "/run/skiff-testcluster"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testcluster up [-nodes N] [-pod-network routed|vxlan] | down")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "serve":
		err = serve(os.Args[2:])
	case "down":
		err = down()
	default:
		err = fmt.Errorf("unknown command %q: want up or down", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testcluster:", err)
		os.Exit(1)
	}
}

// up starts `testcluster serve` detached and waits until it says the
// cluster is ready (or fails).
func up(args []string) error {
	if pid, ok := running(); ok {
		fmt.Printf("a test cluster is already running (pid %d):\n", pid)
		b, _ := os.ReadFile(filepath.Join(stateDir, "info"))
		fmt.Print(string(b))
		return nil
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(stateDir, "log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, append([]string{"serve"}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(stateDir, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Println("starting the test cluster (a server, its nodes and a registry; about 30 s); log:", logPath)
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("the cluster failed to start (%v):\n%s", err, b)
		case <-time.After(500 * time.Millisecond):
		}
		if b, err := os.ReadFile(filepath.Join(stateDir, "info")); err == nil {
			fmt.Print(string(b))
			return nil
		}
	}
}

// serve runs the cluster in the foreground until SIGTERM or SIGINT.
func serve(args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	nodes := fs.Int("nodes", 3, "number of agent nodes")
	podNet := fs.String("pod-network", "routed", "routed or vxlan")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r := &harness.Runner{}
	defer r.RunCleanups()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ok := r.Do(func() {
		c := cluster.Start(r, cluster.Options{Nodes: *nodes, PodNetwork: *podNet, WaitReady: true})
		var b strings.Builder
		fmt.Fprintf(&b, "test cluster %s is up with %d nodes\n", c.ID, len(c.Nodes))
		fmt.Fprintf(&b, "  kubectl:  nsenter --net=/run/netns/%s %s kubectl --kubeconfig %s get nodes -o wide\n", c.Infra, c.Bin, c.Kubeconfig())
		for _, n := range c.Nodes {
			fmt.Fprintf(&b, "  node %s (%s):  nsenter --net=/run/netns/%s COMMAND\n", n.Name, n.IP, n.NS)
		}
		fmt.Fprintf(&b, "  outside the cluster:  nsenter --net=/run/netns/%s COMMAND\n", c.ClientNS)
		fmt.Fprintf(&b, "  registry:  %s    logs: %s\n  stop it with: make cluster-down\n", cluster.Registry, c.Dir)
		os.WriteFile(filepath.Join(stateDir, "info"), []byte(b.String()), 0o644)
	})
	if !ok {
		return errors.New("cluster start failed")
	}
	<-sigs
	return nil
}

// down stops the running cluster and waits for its cleanup.
func down() error {
	pid, ok := running()
	if !ok {
		fmt.Println("no test cluster is running")
		os.RemoveAll(stateDir)
		return nil
	}
	fmt.Printf("stopping the test cluster (pid %d) and removing its namespaces, processes and mounts\n", pid)
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; ; i++ {
		if syscall.Kill(pid, 0) != nil {
			break
		}
		if i == 240 {
			return fmt.Errorf("pid %d did not stop within 2 minutes; its log: %s", pid, filepath.Join(stateDir, "log"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	return os.RemoveAll(stateDir)
}

func running() (int, bool) {
	b, err := os.ReadFile(filepath.Join(stateDir, "pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0, false
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return pid, strings.Contains(string(cmdline), "serve")
}
