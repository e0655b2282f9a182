package main

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/test/cluster"
)

//go:embed pods.yaml
var podsYAML []byte

// benchPod is an echo server pod and the network namespace it runs in.
type benchPod struct {
	name, ip, netns string
}

// startPods runs the echo DaemonSet and returns its pods in node order
// once Ready, with their network namespaces found through their processes.
func startPods(r *runner, c *cluster.Cluster) []benchPod {
	f := filepath.Join(c.Dir, "podnet-bench.yaml")
	if err := os.WriteFile(f, podsYAML, 0o644); err != nil {
		r.Fatal(err)
	}
	if out, err := c.Kubectl("apply", "-f", f); err != nil {
		r.Fatalf("%v\n%s", err, out)
	}
	byNode := map[string]corev1.Pod{}
	deadline := time.Now().Add(3 * time.Minute)
	for len(byNode) < len(c.Nodes) {
		if time.Now().After(deadline) {
			out, _ := c.Kubectl("get", "pods", "-o", "wide")
			r.Fatalf("bench pods not Ready on every node after 3 minutes:\n%s", out)
		}
		time.Sleep(500 * time.Millisecond)
		list, err := c.Client().CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=podnet-bench"})
		if err != nil {
			continue
		}
		clear(byNode)
		for _, p := range list.Items {
			if ready(&p) {
				byNode[p.Spec.NodeName] = p
			}
		}
	}
	var pods []benchPod
	for _, n := range c.Nodes {
		p := byNode[n.Name]
		pid := n.ProcessWithEnv("POD_NAME=" + p.Name)
		if pid == 0 {
			r.Fatalf("no process of pod %s in %s", p.Name, n.CgroupDir())
		}
		pods = append(pods, benchPod{name: p.Name, ip: p.Status.PodIP, netns: fmt.Sprintf("/proc/%d/ns/net", pid)})
	}
	return pods
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil
		}
	}
	return false
}

// waitListen waits until something listens on TCP port in namespace ns.
func waitListen(r *runner, ns string, port string) {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err := inNetns(ns, "ss", "-Hltn", "sport = :"+port).Output()
		if err == nil && strings.TrimSpace(string(out)) != "" {
			return
		}
		if time.Now().After(deadline) {
			r.Fatalf("nothing listens on port %s in %s", port, ns)
		}
	}
}

// linkMTU is dev's MTU in namespace ns.
func linkMTU(r *runner, ns, dev string) string {
	out, err := inNetns(ns, "ip", "-o", "link", "show", "dev", dev).Output()
	if err != nil {
		r.Fatalf("ip link show %s in %s: %v", dev, ns, err)
	}
	f := strings.Fields(string(out))
	if i := slices.Index(f, "mtu"); i >= 0 && i+1 < len(f) {
		return f[i+1]
	}
	return "?"
}

// iperf is one iperf3 TCP run from cli to srv, in bits/s received. A run
// the server refuses (it still winds down the previous test) is retried.
func iperf(r *runner, cli, srv endpoint, o options) float64 {
	var msg string
	for range 3 {
		argv := pinned(o.clientCPU, "iperf3", "-c", srv.ip, "-p", iperfPort, "-t", strconv.FormatFloat(o.duration.Seconds(), 'f', -1, 64), "-J")
		cmd := inNetns(cli.ns, argv[0], argv[1:]...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
			Error string `json:"error"`
		}
		jerr := json.Unmarshal(out, &res)
		if err == nil && jerr == nil && res.Error == "" && res.End.SumReceived.BitsPerSecond > 0 {
			return res.End.SumReceived.BitsPerSecond
		}
		msg = fmt.Sprintf("%v %v %s %s", err, jerr, res.Error, stderr.String())
		time.Sleep(time.Second)
	}
	r.Fatalf("iperf3 %s → %s: %s", cli.ip, srv.ip, msg)
	return 0
}

// rtt is one ping-pong run's round-trip times in µs.
type rtt struct{ p50, p99, mean float64 }

// pingpong runs this program's pingpong client in cli's namespace against
// the echo server's TCP echo at srv (the echo binary, as in the image).
func pingpong(r *runner, cli, srv endpoint, o options) rtt {
	self, err := os.Executable()
	if err != nil {
		r.Fatal(err)
	}
	argv := pinned(o.clientCPU, self, "pingpong", "-addr", net.JoinHostPort(srv.ip, pingPort),
		"-n", strconv.Itoa(o.pings), "-size", strconv.Itoa(o.size))
	out, err := inNetns(cli.ns, argv[0], argv[1:]...).CombinedOutput()
	var v rtt
	if _, serr := fmt.Sscan(string(out), &v.p50, &v.p99, &v.mean); err != nil || serr != nil {
		r.Fatalf("pingpong %s → %s: %v %v: %s", cli.ip, srv.ip, err, serr, out)
	}
	return v
}

// pingpongMain is `podnet pingpong -addr HOST:PORT -n N -size S`: one TCP
// connection to the echo server's TCP echo (which greets with one line, then
// echoes), n round trips of size bytes after a warm-up, one at a time.
// Prints "p50 p99 mean" in µs.
func pingpongMain(args []string) int {
	fs := flag.NewFlagSet("pingpong", flag.ContinueOnError)
	addr := fs.String("addr", "", "echo server's TCP echo address")
	n := fs.Int("n", 5000, "round trips")
	size := fs.Int("size", 64, "message size in bytes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := runPingpong(*addr, *n, *size); err != nil {
		fmt.Fprintln(os.Stderr, "pingpong:", err)
		return 1
	}
	return 0
}

func runPingpong(addr string, n, size int) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	msg, buf := make([]byte, size), make([]byte, size)
	for i := range msg {
		msg[i] = byte('a' + i%26)
	}
	const warmup = 200
	times := make([]float64, 0, n)
	for i := range warmup + n {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		if i >= warmup {
			times = append(times, float64(time.Since(start).Nanoseconds())/1e3)
		}
	}
	slices.Sort(times)
	var sum float64
	for _, t := range times {
		sum += t
	}
	fmt.Printf("%.1f %.1f %.1f\n", times[len(times)/2], times[len(times)*99/100], sum/float64(len(times)))
	return nil
}
