// Package netpol benchmarks Skiff's NetworkPolicy enforcement.
//
// BenchmarkProgramming measures the agent's side of programming latency:
// from a change in the informers' state (a policy edited, a pod relabelled)
// to the node's BPF maps holding the result: model.Compute over the whole
// state plus policymap.Apply of the difference, with 1,000 local pods
// (endpoints in the maps, no veths) and 1,000 policies selecting them. It
// prints p50, p99 and max per kind of change. The API server's and the
// informers' share (watch delivery) is not in it; the end-to-end figure on a
// cluster, and the iptables/ipset peer, are still to do (docs/netpol.md).
//
//	bench/netpol/run.sh     (as root)
package netpol

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/netpol/model"
	"github.com/skiffnet/skiff/netpol/policymap"
)

const (
	namespaces  = 50
	podsPerNS   = 20 // 1,000 pods, all local
	policiesPer = 20 // 1,000 policies
)

// changes is how many of each kind of change are timed (CHANGES, default 100).
var changes = 100

func init() {
	if n, err := strconv.Atoi(os.Getenv("CHANGES")); err == nil && n > 0 {
		changes = n
	}
}

// cluster builds the state: namespace i has pods labelled app=a0..a9 and
// role=r0..r4; policy j of a namespace selects app=a(j%10) and allows
// role=r(j%5) pods of namespaces with team=t(j%3) on TCP port 8000+j.
func cluster() model.State {
	var s model.State
	for i := range namespaces {
		ns := fmt.Sprintf("ns%d", i)
		s.Namespaces = append(s.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels: map[string]string{corev1.LabelMetadataName: ns, "team": fmt.Sprintf("t%d", i%3)}}})
		for p := range podsPerNS {
			ip := netip.AddrFrom4([4]byte{10, 244, byte(i), byte(p + 2)})
			s.Pods = append(s.Pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", p),
					Labels: map[string]string{"app": fmt.Sprintf("a%d", p%10), "role": fmt.Sprintf("r%d", p%5)}},
				Spec:   corev1.PodSpec{NodeName: "n1"},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String()},
			})
		}
		for j := range policiesPer {
			s.Policies = append(s.Policies, policy(ns, j, int32(8000+j)))
		}
	}
	return s
}

func policy(ns string, j int, port int32) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pol%d", j)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", j%10)}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", j%3)}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"role": fmt.Sprintf("r%d", j%5)}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &intstr.IntOrString{IntVal: port}}},
			}},
		},
	}
}

func BenchmarkProgramming(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (BPF maps)")
	}
	pins := b.TempDir()
	if err := bpf.MountBPFFS(pins); err != nil {
		b.Fatal(err)
	}
	// Pins and mount go even when the benchmark fails: a leftover bpffs
	// would show in every later test's view of the machine.
	b.Cleanup(func() {
		bpf.RemovePolicy(pins)
		unix.Unmount(pins, unix.MNT_DETACH)
	})
	p, err := bpf.LoadPolicy(pins)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	w, err := policymap.New(p)
	if err != nil {
		b.Fatal(err)
	}
	s := cluster()
	opts := model.Options{NodeName: "n1"}
	sync := func() time.Duration {
		start := time.Now()
		eps, err := model.Compute(s, opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Apply(eps); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	first := sync()
	var policyEdits, relabels []time.Duration
	for b.Loop() {
		for i := range changes {
			// A policy gets another port.
			k := (i * 37) % len(s.Policies)
			old := s.Policies[k]
			s.Policies[k] = policy(old.Namespace, k%policiesPer, int32(9000+i))
			policyEdits = append(policyEdits, sync())
			// A pod changes its role, so it becomes a peer of other policies.
			pod := s.Pods[(i*53)%len(s.Pods)].DeepCopy()
			pod.Labels["role"] = fmt.Sprintf("r%d", (i+1)%5)
			s.Pods[(i*53)%len(s.Pods)] = pod
			relabels = append(relabels, sync())
		}
	}
	entries := 0
	var k bpf.PolicyRuleKey
	var v bpf.PolicyRule
	for it := p.Rules.Iterate(); it.Next(&k, &v); {
		entries++
	}
	fmt.Printf("\nNetworkPolicy programming on one node: %d local pods, %d policies, %d rule entries in the maps\n",
		len(s.Pods), len(s.Policies), entries)
	fmt.Printf("first full sync: %v\n\n", first.Round(time.Millisecond))
	fmt.Printf("%-22s %8s %8s %8s %8s\n", "change", "n", "p50", "p99", "max")
	for _, r := range []struct {
		name string
		d    []time.Duration
	}{{"policy edited", policyEdits}, {"pod relabelled", relabels}} {
		slices.Sort(r.d)
		fmt.Printf("%-22s %8d %8v %8v %8v\n", r.name, len(r.d), pct(r.d, 50), pct(r.d, 99), r.d[len(r.d)-1].Round(time.Microsecond))
	}
}

func pct(d []time.Duration, p int) time.Duration {
	return d[(len(d)-1)*p/100].Round(time.Microsecond)
}
