package netpol

// BenchmarkEndToEnd measures NetworkPolicy programming latency the way a
// user sees it, on a 3-node test cluster: from the API call that makes a
// change (a policy created or deleted, client pods relabelled, the client
// namespace relabelled) to the moment every affected pod pair, on every
// node, behaves under the new rules. A server pod and a client pod run on
// each node (9 pairs, 6 of them across nodes); a prober per pair connects
// from inside the client pod's network namespace every few milliseconds.
// A pair counts as switched at the first of two probes in a row that
// agree with the new rules; a change counts as done when the last pair
// switched. API server, watch delivery, agent sync and map writes are all
// in the figure. TRIALS sets the trials per kind of change (default 20).

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	testcluster "github.com/skiffnet/skiff/test/cluster"
)

const (
	srvNS, cliNS = "lat-srv", "lat-cli"
	probeEvery   = 5 * time.Millisecond
	probeTimeout = 40 * time.Millisecond // a dropped SYN: no answer within this
)

func BenchmarkEndToEnd(b *testing.B) {
	trials := 20
	if v, err := strconv.Atoi(os.Getenv("TRIALS")); err == nil && v > 0 {
		trials = v
	}
	c := testcluster.Start(b, testcluster.Options{Nodes: 3, WaitReady: true})
	cs := c.Client()
	ctx := context.Background()
	servers, clients := e2ePods(b, c)
	p := startProbers(b, clients, servers)
	defer p.stop()
	p.waitAll(b, true, time.Minute)

	type kind struct {
		name   string
		before func() // sets up the kind; every pair must then be allowed
		on     func() // the timed change that denies
		off    func() // the timed change that allows again
	}
	deny := netpolObj("deny", metav1.LabelSelector{}, nil)
	podAllow := netpolObj("allow-role", metav1.LabelSelector{}, &networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "ok"}}})
	nsAllow := netpolObj("allow-team", metav1.LabelSelector{}, &networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "ok"}}})
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	kinds := []kind{
		{name: "policy", before: func() {},
			on: func() {
				_, err := cs.NetworkingV1().NetworkPolicies(srvNS).Create(ctx, deny, metav1.CreateOptions{})
				must(err)
			},
			off: func() { must(cs.NetworkingV1().NetworkPolicies(srvNS).Delete(ctx, deny.Name, metav1.DeleteOptions{})) }},
		{name: "pod label",
			before: func() {
				labelPods(b, cs, clients, `"ok"`)
				_, err := cs.NetworkingV1().NetworkPolicies(srvNS).Create(ctx, podAllow, metav1.CreateOptions{})
				must(err)
			},
			on:  func() { labelPods(b, cs, clients, "null") },
			off: func() { labelPods(b, cs, clients, `"ok"`) }},
		{name: "namespace label",
			before: func() {
				must(cs.NetworkingV1().NetworkPolicies(srvNS).Delete(ctx, podAllow.Name, metav1.DeleteOptions{}))
				labelNS(b, cs, `"ok"`)
				_, err := cs.NetworkingV1().NetworkPolicies(srvNS).Create(ctx, nsAllow, metav1.CreateOptions{})
				must(err)
			},
			on:  func() { labelNS(b, cs, "null") },
			off: func() { labelNS(b, cs, `"ok"`) }},
	}
	results, calls := map[string][]time.Duration{}, map[string][]time.Duration{}
	record := func(name string, took, call time.Duration) {
		results[name] = append(results[name], took)
		calls[name] = append(calls[name], call)
	}
	for b.Loop() {
		for _, k := range kinds {
			k.before()
			p.waitAll(b, true, time.Minute)
			for range trials {
				took, call := p.timeChange(b, false, k.on)
				record(k.name+" -> denied", took, call)
				took, call = p.timeChange(b, true, k.off)
				record(k.name+" -> allowed", took, call)
			}
		}
	}
	b.StopTimer()
	fmt.Printf("\nNetworkPolicy end to end: API call -> every one of %d pod pairs (3 nodes) behaves under the new rules, %d trials each\n", len(p.pairs), trials)
	fmt.Printf("%-28s %10s %10s %10s %16s\n", "change", "p50", "p99", "max", "API call p50")
	for _, k := range kinds {
		for _, dir := range []string{" -> denied", " -> allowed"} {
			d, c := results[k.name+dir], calls[k.name+dir]
			fmt.Printf("%-28s %10s %10s %10s %16s\n", k.name+dir, msf(rank(d, 50)), msf(rank(d, 99)), msf(rank(d, 100)), msf(rank(c, 50)))
		}
	}
	fmt.Printf("probe: a new TCP connection per pair every %v, refused = no answer within %v\n", probeEvery, probeTimeout)
}

func netpolObj(name string, sel metav1.LabelSelector, from *networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: sel, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if from != nil {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{*from}}}
	}
	return np
}

func labelPods(b *testing.B, cs kubernetes.Interface, pods []podRef, role string) {
	b.Helper()
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() {
			patch := fmt.Sprintf(`{"metadata":{"labels":{"role":%s}}}`, role)
			if _, err := cs.CoreV1().Pods(cliNS).Patch(context.Background(), p.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
}

func labelNS(b *testing.B, cs kubernetes.Interface, team string) {
	b.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"team":%s}}}`, team)
	if _, err := cs.CoreV1().Namespaces().Patch(context.Background(), cliNS, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		b.Fatal(err)
	}
}

type podRef struct{ name, ip, netns string }

// e2ePods starts a server and a client pod on every node and returns them
// once Ready, each with its network namespace.
func e2ePods(b *testing.B, c *testcluster.Cluster) (servers, clients []podRef) {
	b.Helper()
	var docs []string
	for _, ns := range []string{srvNS, cliNS} {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n---\n", ns))
		for i, n := range c.Nodes {
			docs = append(docs, testcluster.EchoPodYAML(ns, fmt.Sprintf("p%d", i), n.Name, "lat"))
		}
	}
	file := filepath.Join(b.TempDir(), "pods.yaml")
	if err := os.WriteFile(file, []byte(strings.Join(docs, "")), 0o644); err != nil {
		b.Fatal(err)
	}
	c.MustKubectl("apply", "-f", file)
	c.MustKubectl("wait", "--for=condition=Ready", "--timeout=3m", "-n", srvNS, "pod", "--all")
	c.MustKubectl("wait", "--for=condition=Ready", "--timeout=3m", "-n", cliNS, "pod", "--all")
	for _, ns := range []string{srvNS, cliNS} {
		pods, err := c.Client().CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range pods.Items {
			ref := podRef{name: p.Name, ip: p.Status.PodIP, netns: podNetns(b, c, &p)}
			if ns == srvNS {
				servers = append(servers, ref)
			} else {
				clients = append(clients, ref)
			}
		}
	}
	return servers, clients
}

// podNetns is the network namespace of pod, found through its process
// on its node.
func podNetns(b *testing.B, c *testcluster.Cluster, pod *corev1.Pod) string {
	b.Helper()
	for _, n := range c.Nodes {
		if n.Name != pod.Spec.NodeName {
			continue
		}
		if pid := n.ProcessWithEnv("POD_NAMESPACE="+pod.Namespace, "POD_NAME="+pod.Name); pid != 0 {
			return fmt.Sprintf("/proc/%d/ns/net", pid)
		}
	}
	b.Fatalf("no process of pod %s/%s found on node %s", pod.Namespace, pod.Name, pod.Spec.NodeName)
	return ""
}

// pairState is what a pair's prober last saw: the result of its probes
// and since when (the start of the first probe of the run) they agree.
type pairState struct {
	ok    bool
	since time.Time
	run   int
}

type probers struct {
	pairs []string
	mu    sync.Mutex
	state []pairState
	done  chan struct{}
	wg    sync.WaitGroup
}

func startProbers(b *testing.B, clients, servers []podRef) *probers {
	b.Helper()
	p := &probers{done: make(chan struct{})}
	for _, cl := range clients {
		for _, s := range servers {
			i := len(p.pairs)
			p.pairs = append(p.pairs, cl.name+"->"+s.name)
			p.state = append(p.state, pairState{})
			p.wg.Go(func() { p.probe(b, i, cl.netns, net.JoinHostPort(s.ip, "8080")) })
		}
	}
	return p
}

// probe runs on a thread of its own, moved into the client pod's network
// namespace for good; the thread ends with the goroutine (it stays
// locked), so no other goroutine ever runs in that namespace.
func (p *probers) probe(b *testing.B, i int, nsPath, addr string) {
	runtime.LockOSThread()
	h, err := netns.GetFromPath(nsPath)
	if err == nil {
		err = netns.Set(h)
		h.Close()
	}
	if err != nil {
		b.Errorf("enter %s: %v", nsPath, err)
		return
	}
	for {
		select {
		case <-p.done:
			return
		default:
		}
		start := time.Now()
		conn, err := net.DialTimeout("tcp", addr, probeTimeout)
		if err == nil {
			conn.Close()
		}
		p.mu.Lock()
		st := &p.state[i]
		if st.run > 0 && st.ok == (err == nil) {
			st.run++
		} else {
			*st = pairState{ok: err == nil, since: start, run: 1}
		}
		p.mu.Unlock()
		time.Sleep(probeEvery)
	}
}

func (p *probers) stop() { close(p.done); p.wg.Wait() }

// switched reports whether every pair has seen want twice in a row since
// t0, and when the last of them switched.
func (p *probers) switched(want bool, t0 time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, st := range p.state {
		if st.ok != want || st.run < 2 || st.since.Before(t0) {
			return time.Time{}, false
		}
		if st.since.After(last) {
			last = st.since
		}
	}
	return last, true
}

func (p *probers) waitAll(b *testing.B, want bool, within time.Duration) {
	b.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		all := true
		for _, st := range p.state {
			all = all && st.ok == want && st.run >= 2
		}
		p.mu.Unlock()
		if all {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("pairs %v not all %v within %v", p.pairs, want, within)
}

// timeChange makes the change and returns how long until every pair
// behaves as want, and how long the API call(s) took.
func (p *probers) timeChange(b *testing.B, want bool, change func()) (time.Duration, time.Duration) {
	b.Helper()
	p.waitAll(b, !want, time.Minute)
	t0 := time.Now()
	change()
	call := time.Since(t0)
	for time.Since(t0) < time.Minute {
		if last, ok := p.switched(want, t0); ok {
			return last.Sub(t0), call
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatalf("pairs not all %v within a minute of the change", want)
	return 0, 0
}

// rank is the nearest-rank percentile: with 20 trials, p99 is the worst.
func rank(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[max((len(s)*p+99)/100-1, 0)]
}

func msf(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
