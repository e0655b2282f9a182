// Package lbupdate measures how long a deleted pod stays in the service load
// balancer: on a 3-node test cluster it deletes the pods of a Deployment one
// at a time and, on every node, times from the API's answer to the delete
// to the moment the pod's address is gone from the ClusterIP frontend in
// that node's pinned BPF maps (what a new connect(2) on the node reads). A
// rolling update is error-free when a pod's preStop pause outlasts this.
// An EndpointSlice watch marks when the control plane published the pod as
// not ready, which splits the delay into the control plane's and the
// agents' shares. ROUNDS sets the number of pods deleted (default 20).
//
//	bench/lbupdate/run.sh      (as root, after make build)
package lbupdate

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/test/cluster"
)

const (
	replicas = 3
	port     = 80
	target   = 8080
	name     = "lbupdate"
	// pollEvery is the resolution of the map side: each poll is a handful
	// of map lookups per node.
	pollEvery = time.Millisecond
)

func BenchmarkLBUpdate(b *testing.B) {
	rounds := 20
	if v, err := strconv.Atoi(os.Getenv("ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	c := cluster.Start(b, cluster.Options{Nodes: 3, WaitReady: true})
	client := c.Client()
	ctx := context.Background()
	if err := create(ctx, client); err != nil {
		b.Fatal(err)
	}
	svc, err := client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	vip := netip.MustParseAddr(svc.Spec.ClusterIP)
	var nodes []*node
	for _, n := range c.Nodes {
		m, err := bpf.OpenPinned("/sys/fs/bpf/skiff/" + n.Name)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		nodes = append(nodes, &node{name: n.Name, maps: m, vip: vip})
	}
	var sliceSeen, agentShare []time.Duration
	for b.Loop() {
		for round := range rounds {
			pod, err := waitSteady(ctx, client, nodes)
			if err != nil {
				b.Fatalf("round %d: %v", round, err)
			}
			addr := netip.AddrPortFrom(netip.MustParseAddr(pod.Status.PodIP), target)
			sliceCh := make(chan time.Time, 1)
			wctx, stop := context.WithCancel(ctx)
			if err := watchSlice(wctx, client, pod.Status.PodIP, sliceCh); err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			gone := make([]time.Time, len(nodes))
			if err := client.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			for i, n := range nodes {
				wg.Go(func() { gone[i] = n.waitGone(addr, t0.Add(30*time.Second)) })
			}
			wg.Wait()
			stop()
			for i, n := range nodes {
				if gone[i].IsZero() {
					b.Fatalf("round %d: %s still held %s 30 s after its pod was deleted", round, n.name, addr)
				}
				n.took = append(n.took, gone[i].Sub(t0))
			}
			select {
			case t := <-sliceCh:
				sliceSeen = append(sliceSeen, t.Sub(t0))
				// The agents' share: from the slice update to the maps.
				for i := range nodes {
					agentShare = append(agentShare, gone[i].Sub(t))
				}
			default:
			}
		}
	}
	b.StopTimer()
	printTable(nodes, sliceSeen, agentShare, rounds)
}

// node is one node's pinned maps and what was measured on it.
type node struct {
	name string
	maps *bpf.Maps
	vip  netip.Addr
	took []time.Duration
}

// backends reads the ClusterIP frontend's backends as a connect on the node
// would: the frontend, its slots 1..count, each slot's backend.
func (n *node) backends() ([]netip.AddrPort, error) {
	key := bpf.ServiceKey{Addr: bpf.Addr4(n.vip), Port: bpf.Port(port), Proto: 6, Scope: bpf.ScopeInternal}
	var svc bpf.Service
	if err := n.maps.Services.Lookup(&key, &svc); err != nil {
		return nil, fmt.Errorf("frontend %s:%d: %w", n.vip, port, err)
	}
	var out []netip.AddrPort
	for slot := uint32(1); slot <= uint32(svc.Count); slot++ {
		var id uint32
		var be bpf.Backend
		if err := n.maps.Slots.Lookup(&bpf.SlotKey{Id: svc.Id, Slot: slot}, &id); err != nil {
			continue // a slot being removed right now
		}
		if err := n.maps.Backends.Lookup(&id, &be); err != nil {
			continue
		}
		out = append(out, netip.AddrPortFrom(bpf.DecodeAddr4(be.Addr), bpf.DecodePort(be.Port)))
	}
	return out, nil
}

// waitGone polls until addr is no longer a backend and returns when that
// was seen, or the zero time at the deadline.
func (n *node) waitGone(addr netip.AddrPort, deadline time.Time) time.Time {
	for time.Now().Before(deadline) {
		bs, err := n.backends()
		if now := time.Now(); err == nil && !slices.Contains(bs, addr) {
			return now
		}
		time.Sleep(pollEvery)
	}
	return time.Time{}
}

// waitSteady waits until the Deployment has its replicas Ready and every
// node balances over exactly their addresses, and returns one of the pods.
func waitSteady(ctx context.Context, client kubernetes.Interface, nodes []*node) (*corev1.Pod, error) {
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		pods, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return nil, err
		}
		var ready []corev1.Pod
		want := map[netip.AddrPort]bool{}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && isReady(&p) {
				ready = append(ready, p)
				want[netip.AddrPortFrom(netip.MustParseAddr(p.Status.PodIP), target)] = true
			}
		}
		ok := len(ready) == replicas && len(pods.Items) == replicas
		for _, n := range nodes {
			bs, err := n.backends()
			if err != nil || len(bs) != replicas {
				ok, last = false, fmt.Sprintf("%s: %v %v", n.name, bs, err)
				continue
			}
			for _, b := range bs {
				if !want[b] {
					ok, last = false, fmt.Sprintf("%s holds %s, not a ready pod", n.name, b)
				}
			}
		}
		if ok {
			// Alternate nodes: the victim is the oldest pod.
			slices.SortFunc(ready, func(a, b corev1.Pod) int { return a.CreationTimestamp.Compare(b.CreationTimestamp.Time) })
			return &ready[0], nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, errors.New("no steady state within 2 minutes: " + last)
}

// watchSlice reports when the EndpointSlice first shows ip as not ready:
// the control plane's share of the delay. It returns once the watch has
// delivered the current state, so the delete comes after.
func watchSlice(ctx context.Context, client kubernetes.Interface, ip string, seen chan<- time.Time) error {
	w, err := client.DiscoveryV1().EndpointSlices("default").Watch(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		return fmt.Errorf("watch EndpointSlices: %w", err)
	}
	if _, ok := <-w.ResultChan(); !ok { // the current slice, as ADDED
		return errors.New("EndpointSlice watch closed")
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			s, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok {
				continue
			}
			ready := false
			for _, e := range s.Endpoints {
				if slices.Contains(e.Addresses, ip) && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
					ready = true
				}
			}
			if !ready {
				seen <- time.Now()
				return
			}
		}
	}()
	return nil
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// create makes the Deployment (the demo's zero-error pattern: readiness
// probe, preStop sleep, grace period) and its ClusterIP Service.
func create(ctx context.Context, client kubernetes.Interface) error {
	labels := map[string]string{"app": name}
	grace := int64(10)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name: "echo", Image: "skiff.local/echo:v1", ImagePullPolicy: corev1.PullIfNotPresent,
						Args:  []string{"-tcp", "", "-udp", ""},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: target}},
						ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}},
						Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 2}}},
					}},
				},
			},
		},
	}
	if _, err := client.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Deployment: %w", err)
	}
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{
			Name: "http", Port: port, TargetPort: intstr.FromString("http")}}},
	}
	if _, err := client.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Service: %w", err)
	}
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", d.Seconds()*1000) }

func printTable(nodes []*node, slice, agent []time.Duration, rounds int) {
	fmt.Printf("\npod deleted (API answered) -> address gone from the node's BPF maps, %d pods deleted one at a time\n", rounds)
	fmt.Printf("%-34s %8s %10s %10s %10s\n", "where", "samples", "p50", "p99", "max")
	var all []time.Duration
	row := func(name string, d []time.Duration) {
		fmt.Printf("%-34s %8d %10s %10s %10s\n", name, len(d), ms(pct(d, 50)), ms(pct(d, 99)), ms(pct(d, 100)))
	}
	row("EndpointSlice shows it not ready", slice)
	for i, n := range nodes {
		row(fmt.Sprintf("node %d maps", i+1), n.took)
		all = append(all, n.took...)
	}
	row("every node's maps", all)
	row("  of which EndpointSlice -> maps", agent)
	fmt.Printf("(maps polled every %v; EndpointSlice: its watch event reaching the bench, a bound on what the agents wait for)\n", pollEvery)
}
