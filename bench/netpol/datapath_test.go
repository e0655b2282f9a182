package netpol

// BenchmarkDatapath measures what policy costs a connection: new
// connections per second and TCP throughput from one pod to another on
// the same node, with 0, 100 and 1,000 NetworkPolicies selecting both, as
// Skiff enforces them (its policy programs, loaded and fed through the
// agent's own model, writer and loader) and as kube-router does
// (iptables chains per pod, ipsets of peer addresses, ESTABLISHED
// accepted first), each on its own copy of the same topology:
//
//	client ns  eth0 10.78.0.2/32 ── hc ┐
//	                                   node ns (forwarding; host veths
//	server ns  eth0 10.78.0.3/32 ── hs ┘  169.254.1.1/32, /32 routes)
//
// as Skiff's CNI wires pods. Every setup is measured in every round,
// in a rotating order, and the median of the rounds reported, with its
// ratio to the setup without any policy. Before measuring, each setup is
// checked to enforce: a port no policy allows must not connect.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/bpf/bpftest"
	"github.com/skiffnet/skiff/netpol/model"
	"github.com/skiffnet/skiff/netpol/policymap"
)

const (
	clientIP   = "10.78.0.2"
	serverIP   = "10.78.0.3"
	iperfPort  = 5201
	connPort   = 5202
	deniedPort = 5203 // listened on, allowed by no policy
	fillers    = 50   // other pods in every policy's peers (ipset members, map entries)
)

// setup is one way of enforcing (or not) n policies.
type setup struct {
	name string
	kind string // "none", "skiff", "iptables"
	n    int
	topo *topo
	prog *bpf.Policy // skiff: its programs, for their run time
}

type topo struct {
	node, client, server string
}

func BenchmarkDatapath(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root (network namespaces, BPF)")
	}
	for _, tool := range []string{"ip", "iperf3", "iptables-restore", "ipset"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("needs %s (bench/netpol/run.sh installs it): %v", tool, err)
		}
	}
	// Many short rounds: the machine is shared, and what else runs
	// changes by the second; every setup is measured in every round.
	rounds, secs := envInt("ROUNDS", 15), envInt("SECONDS_PER_TEST", 1)
	pins := b.TempDir()
	if err := bpf.MountBPFFS(pins); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Unmount(pins, unix.MNT_DETACH) })
	setups := []*setup{
		{name: "no policy", kind: "none"},
		{name: "skiff, 0 policies", kind: "skiff", n: 0},
		{name: "skiff, 100", kind: "skiff", n: 100},
		{name: "skiff, 1000", kind: "skiff", n: 1000},
		{name: "iptables, 100", kind: "iptables", n: 100},
		{name: "iptables, 1000", kind: "iptables", n: 1000},
	}
	for i, s := range setups {
		s.topo = newTopo(b)
		switch s.kind {
		case "skiff":
			s.prog = enforceSkiff(b, s.topo, fmt.Sprintf("%s/%d", pins, i), s.n)
		case "iptables":
			enforceIptables(b, s.topo, s.n)
		}
		startServers(b, s.topo)
		checkEnforced(b, s)
	}
	// The kernel's run time of BPF programs (on while this holds; the
	// kernel counts for every program while any holder is open).
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run time statistics: %v", err)
	}
	defer stats.Close()
	conns := map[*setup][]float64{}
	gbits := map[*setup][]float64{}
	for b.Loop() {
		for r := range rounds {
			for k := range setups {
				s := setups[(r+k)%len(setups)]
				conns[s] = append(conns[s], connRate(b, s.topo, secs))
				gbits[s] = append(gbits[s], throughput(b, s.topo, secs))
			}
		}
	}
	base := setups[0]
	fmt.Printf("\nNetworkPolicy data path, pod to pod on one node: median of %d rounds, %d s per test\n\n", rounds, secs)
	fmt.Printf("%-20s %10s %7s %10s %7s %14s\n", "setup", "conn/s", "ratio", "Gbit/s", "ratio", "BPF ns/packet")
	for _, s := range setups {
		c, g := median(conns[s]), median(gbits[s])
		fmt.Printf("%-20s %10.0f %7.2f %10.2f %7.2f %14s\n", s.name, c, c/median(conns[base]), g, g/median(gbits[base]), perPacket(b, s.prog))
	}
}

// perPacket is the mean run time of Skiff's two programs per packet
// they saw, by the kernel's accounting.
func perPacket(b *testing.B, p *bpf.Policy) string {
	if p == nil {
		return "-"
	}
	var rt time.Duration
	var n uint64
	for _, prog := range []*ebpf.Program{p.FromPod, p.ToPod} {
		st, err := prog.Stats()
		if err != nil {
			b.Fatalf("program stats: %v", err)
		}
		rt, n = rt+st.Runtime, n+st.RunCount
	}
	if n == 0 {
		return "no runs"
	}
	return fmt.Sprintf("%.0f", float64(rt.Nanoseconds())/float64(n))
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// newTopo builds the three namespaces (uniquely named, deleted when the
// benchmark ends, also when it fails).
func newTopo(b *testing.B) *topo {
	t := &topo{node: bpftest.Netns(b, "skiffnp-node"), client: bpftest.Netns(b, "skiffnp-cli"), server: bpftest.Netns(b, "skiffnp-srv")}
	bpftest.Sysctl(b, t.node, "net.ipv4.ip_forward=1")
	for _, p := range []struct{ ns, veth, ip string }{{t.client, "hc", clientIP}, {t.server, "hs", serverIP}} {
		bpftest.IP(b, t.node, "link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		bpftest.IP(b, t.node, "addr", "add", "169.254.1.1/32", "dev", p.veth)
		bpftest.IP(b, t.node, "link", "set", p.veth, "up")
		bpftest.IP(b, t.node, "route", "add", p.ip+"/32", "dev", p.veth)
		bpftest.IP(b, p.ns, "addr", "add", p.ip+"/32", "dev", "eth0")
		bpftest.IP(b, p.ns, "link", "set", "eth0", "up")
		bpftest.IP(b, p.ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		bpftest.IP(b, p.ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
	}
	// Many short connections: reuse TIME_WAIT ports on the client side.
	bpftest.Sysctl(b, t.client, "net.ipv4.tcp_tw_reuse=1")
	bpftest.Sysctl(b, t.client, "net.ipv4.ip_local_port_range=10000 65000")
	return t
}

// policies are n policies selecting both pods (and the fillers), each
// allowing ingress from and egress to the same pods on a port of its own;
// the last one allows the ports measured. The other policies' ports are
// not adjacent, so Skiff's port set keeps n ranges.
func policies(n int) []*networkingv1.NetworkPolicy {
	pair := metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"client", "server"}}}}
	var out []*networkingv1.NetworkPolicy
	for i := range n {
		ports := []int32{int32(10000 + 2*i)}
		if i == n-1 {
			ports = []int32{iperfPort, connPort}
		}
		var np []networkingv1.NetworkPolicyPort
		for _, p := range ports {
			np = append(np, networkingv1.NetworkPolicyPort{Port: &intstr.IntOrString{IntVal: p}})
		}
		peers := []networkingv1.NetworkPolicyPeer{{PodSelector: &pair}}
		out = append(out, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("pol%d", i)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: pair,
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: np}},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{To: peers, Ports: np}},
			},
		})
	}
	return out
}

func fillerIP(i int) string { return fmt.Sprintf("10.79.0.%d", i+2) }

// enforceSkiff loads Skiff's policy programs (own pins), writes the
// model's result for the n policies and attaches them to the host veths.
func enforceSkiff(b *testing.B, t *topo, pins string, n int) *bpf.Policy {
	p, err := bpf.LoadPolicy(pins)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		p.Close()
		bpf.RemovePolicy(pins)
	})
	pod := func(name, ip, node, app string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name, Labels: map[string]string{"app": app}},
			Spec:       corev1.PodSpec{NodeName: node},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
		}
	}
	s := model.State{Pods: []*corev1.Pod{pod("client", clientIP, "bench", "client"), pod("server", serverIP, "bench", "server")}}
	for i := range fillers {
		s.Pods = append(s.Pods, pod(fmt.Sprintf("filler%d", i), fillerIP(i), "elsewhere", "client"))
	}
	s.Policies = policies(n)
	eps, err := model.NewModel(model.Options{NodeName: "bench"}).Update(s)
	if err != nil {
		b.Fatal(err)
	}
	w, err := policymap.New(p)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Apply(eps); err != nil {
		b.Fatal(err)
	}
	if err := bpftest.Do(t.node, func() error { return p.Attach([]string{"hc", "hs"}) }); err != nil {
		b.Fatal(err)
	}
	return p
}

// enforceIptables programs the n policies as kube-router does: a chain
// per pod and direction, entered by address from FORWARD, that accepts
// established flows, runs every policy's chain (each marks what one of
// its rules allows, matching ipsets of the rule's peers and of the pods it
// selects), drops what no policy marked and clears the mark.
func enforceIptables(b *testing.B, t *topo, n int) {
	peers := append([]string{clientIP, serverIP}, func() (f []string) {
		for i := range fillers {
			f = append(f, fillerIP(i))
		}
		return f
	}()...)
	var sets, rules bytes.Buffer
	fmt.Fprintln(&rules, "*filter\n:NP-FWD - [0:0]")
	pods := map[string]string{"c": clientIP, "s": serverIP}
	for _, p := range []string{"c", "s"} {
		fmt.Fprintf(&rules, ":NP-IN-%s - [0:0]\n:NP-EG-%s - [0:0]\n", p, p)
	}
	for i := range n {
		fmt.Fprintf(&rules, ":NP-PI-%d - [0:0]\n:NP-PE-%d - [0:0]\n", i, i)
	}
	fmt.Fprintln(&rules, "-A FORWARD -j NP-FWD")
	for _, p := range []string{"c", "s"} {
		fmt.Fprintf(&rules, "-A NP-FWD -s %s/32 -j NP-EG-%s\n", pods[p], p)
	}
	for _, p := range []string{"c", "s"} {
		fmt.Fprintf(&rules, "-A NP-FWD -d %s/32 -j NP-IN-%s\n", pods[p], p)
	}
	for _, p := range []string{"c", "s"} {
		for _, dir := range []struct{ chain, pol string }{{"NP-EG-" + p, "NP-PE-"}, {"NP-IN-" + p, "NP-PI-"}} {
			fmt.Fprintf(&rules, "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", dir.chain)
			for i := range n {
				fmt.Fprintf(&rules, "-A %s -j %s%d\n", dir.chain, dir.pol, i)
			}
			fmt.Fprintf(&rules, "-A %s -m mark ! --mark 0x10000/0x10000 -j DROP\n", dir.chain)
			fmt.Fprintf(&rules, "-A %s -j MARK --set-xmark 0x0/0x10000\n", dir.chain)
		}
	}
	for i := range n {
		ports := strconv.Itoa(10000 + 2*i)
		if i == n-1 {
			ports = fmt.Sprintf("%d,%d", iperfPort, connPort)
		}
		// Peers and selected pods are the same set here, as in kube-router
		// two sets per rule: its peers and the pods the policy selects.
		for _, set := range []string{fmt.Sprintf("NP-PEER-%d", i), fmt.Sprintf("NP-SEL-%d", i)} {
			fmt.Fprintf(&sets, "create %s hash:ip family inet\n", set)
			for _, a := range peers {
				fmt.Fprintf(&sets, "add %s %s\n", set, a)
			}
		}
		fmt.Fprintf(&rules, "-A NP-PI-%d -p tcp -m set --match-set NP-PEER-%d src -m set --match-set NP-SEL-%d dst -m multiport --dports %s -j MARK --set-xmark 0x10000/0x10000\n", i, i, i, ports)
		fmt.Fprintf(&rules, "-A NP-PE-%d -p tcp -m set --match-set NP-SEL-%d src -m set --match-set NP-PEER-%d dst -m multiport --dports %s -j MARK --set-xmark 0x10000/0x10000\n", i, i, i, ports)
	}
	fmt.Fprintln(&rules, "COMMIT")
	run(b, &sets, "ip", "netns", "exec", t.node, "ipset", "restore")
	run(b, &rules, "ip", "netns", "exec", t.node, "iptables-restore")
}

func run(b *testing.B, stdin *bytes.Buffer, name string, args ...string) {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = stdin
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// startServers starts iperf3 and the connection servers in the server
// namespace, stopped when the benchmark ends.
func startServers(b *testing.B, t *topo) {
	cmd := exec.Command("ip", "netns", "exec", t.server, "iperf3", "-s", "-p", strconv.Itoa(iperfPort))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for _, port := range []int{connPort, deniedPort} {
		var ln net.Listener
		err := bpftest.Do(t.server, func() (err error) {
			ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", serverIP, port))
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte{1}) // then close: the client reads one byte and EOF
				c.Close()
			}
		}()
	}
	// iperf3 needs a moment to listen.
	deadline := time.Now().Add(5 * time.Second)
	for !connects(t, iperfPort, time.Second) {
		if time.Now().After(deadline) {
			b.Fatalf("iperf3 server in %s does not answer", t.server)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// connects reports whether the client can open a connection to port.
func connects(t *topo, port int, timeout time.Duration) bool {
	return bpftest.Do(t.client, func() error {
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", serverIP, port), timeout)
		if err == nil {
			c.Close()
		}
		return err
	}) == nil
}

// checkEnforced fails unless a setup with policies drops what they do not
// allow (and one without lets it through): a benchmark of a path that
// enforces nothing would measure nothing.
func checkEnforced(b *testing.B, s *setup) {
	open := connects(s.topo, deniedPort, 500*time.Millisecond)
	if want := s.n == 0; open != want {
		b.Fatalf("%s: a connection to port %d, which no policy allows: connected %v, want %v", s.name, deniedPort, open, want)
	}
	if !connects(s.topo, connPort, time.Second) {
		b.Fatalf("%s: no connection to port %d, which a policy allows", s.name, connPort)
	}
}

// connRate opens connections from the client for secs seconds, two at a
// time, each to completion (connect, read the server's byte and its
// close), and returns connections per second.
func connRate(b *testing.B, t *topo, secs int) float64 {
	const workers = 2
	var total, failed atomic.Int64
	end := time.Now().Add(time.Duration(secs) * time.Second)
	errc := make(chan error, workers)
	for range workers {
		go func() {
			errc <- bpftest.Do(t.client, func() error {
				buf := make([]byte, 2)
				for time.Now().Before(end) {
					c, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", serverIP, connPort), time.Second)
					if err != nil {
						failed.Add(1)
						continue
					}
					c.Read(buf)
					c.Close()
					total.Add(1)
				}
				return nil
			})
		}()
	}
	for range workers {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	if f := failed.Load(); f > total.Load()/100 {
		b.Fatalf("%d of %d connections failed", f, f+total.Load())
	}
	return float64(total.Load()) / float64(secs)
}

// throughput runs iperf3 (one TCP stream) for secs seconds and returns
// what the server received, in Gbit/s.
func throughput(b *testing.B, t *topo, secs int) float64 {
	out, err := exec.Command("ip", "netns", "exec", t.client, "iperf3", "-c", serverIP, "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(secs), "-J").Output()
	if err != nil {
		b.Fatalf("iperf3 in %s: %v: %s", t.client, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("iperf3 output: %v", err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}
