// Package netpol benchmarks Skiff's NetworkPolicy enforcement.
//
// BenchmarkProgramming measures the agent's side of programming latency:
// from a change in the informers' state (a policy created, edited or
// deleted, a pod created or relabelled, a namespace relabelled) to the
// node's BPF maps holding the result: what the controller's sync does,
// model.Model.Update over the listers' state plus policymap.Apply of the
// difference, with 1,000 local pods (endpoints in the maps, no veths) and
// 1,000 policies selecting them. It prints p50, p99 and max per kind of
// change, wall and CPU time, next to model.Compute from scratch (what
// every sync did before the model was incremental). The API server's and
// the informers' share (watch delivery) is not in it.
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
	m := model.NewModel(opts)
	// sync is what the controller does on a change: the incremental model
	// over the listers' state, then the writer.
	sync := func() sample {
		start, cpu := time.Now(), cpuTime()
		eps, err := m.Update(s)
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Apply(eps); err != nil {
			b.Fatal(err)
		}
		return sample{time.Since(start), cpuTime() - cpu}
	}
	// full is the reference computation from scratch, for comparison
	// (what every sync did before the model was incremental).
	full := func() sample {
		start, cpu := time.Now(), cpuTime()
		if _, err := model.Compute(s, opts); err != nil {
			b.Fatal(err)
		}
		return sample{time.Since(start), cpuTime() - cpu}
	}
	first := sync()
	kinds := []string{"policy created", "policy edited", "policy deleted", "pod created", "pod relabelled", "namespace relabelled", "(full Compute)"}
	times := map[string][]sample{}
	for b.Loop() {
		for i := range changes {
			for _, k := range kinds {
				change(&s, k, i)
				if k == "(full Compute)" {
					times[k] = append(times[k], full())
				} else {
					times[k] = append(times[k], sync())
				}
			}
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
	fmt.Printf("first sync (everything): %v wall, %v CPU\n\n", first.wall.Round(time.Millisecond), first.cpu.Round(time.Millisecond))
	fmt.Printf("%-22s %5s %10s %10s %10s %10s %10s\n", "change", "n", "wall p50", "wall p99", "wall max", "CPU p50", "CPU p99")
	for _, k := range kinds {
		var wall, cpu []time.Duration
		for _, s := range times[k] {
			wall, cpu = append(wall, s.wall), append(cpu, s.cpu)
		}
		slices.Sort(wall)
		slices.Sort(cpu)
		fmt.Printf("%-22s %5d %10v %10v %10v %10v %10v\n", k, len(wall), pct(wall, 50), pct(wall, 99), wall[len(wall)-1].Round(time.Microsecond), pct(cpu, 50), pct(cpu, 99))
	}
}

// sample is one sync's elapsed time and the CPU time the process spent in
// it (all threads: the garbage collector's share included). On a shared
// machine the wall time includes waiting for a core; the CPU time does not.
type sample struct{ wall, cpu time.Duration }

func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// change makes the i-th change of a kind to s, replacing objects as the
// informers do.
func change(s *model.State, kind string, i int) {
	switch kind {
	case "policy created":
		// One more policy in a namespace, selecting pods that other
		// policies select too.
		ns := fmt.Sprintf("ns%d", (i*7)%namespaces)
		pol := policy(ns, i%policiesPer, int32(10000+i))
		pol.Name = fmt.Sprintf("new%d", i)
		s.Policies = append(s.Policies, pol)
	case "policy edited":
		// A policy gets another port.
		k := (i * 37) % (namespaces * policiesPer)
		old := s.Policies[k]
		s.Policies[k] = policy(old.Namespace, k%policiesPer, int32(9000+i))
	case "policy deleted":
		s.Policies = s.Policies[:len(s.Policies)-1] // the one created above
	case "pod created":
		// A pod starts in a namespace, so it is selected by policies and
		// is a peer of others.
		ns := (i * 11) % namespaces
		ip := netip.AddrFrom4([4]byte{10, 245, byte(i / 250), byte(i%250 + 2)})
		s.Pods = append(s.Pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", ns), Name: fmt.Sprintf("new%d", i),
				Labels: map[string]string{"app": fmt.Sprintf("a%d", i%10), "role": fmt.Sprintf("r%d", i%5)}},
			Spec:   corev1.PodSpec{NodeName: "n1"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String()},
		})
	case "pod relabelled":
		// A pod changes its role, so it becomes a peer of other policies.
		j := (i * 53) % (namespaces * podsPerNS)
		pod := s.Pods[j].DeepCopy()
		pod.Labels["role"] = fmt.Sprintf("r%d", (i+1)%5)
		s.Pods[j] = pod
	case "namespace relabelled":
		// A namespace moves to another team: its pods leave the peers of
		// a third of the policies and join another third's.
		j := (i * 13) % namespaces
		ns := s.Namespaces[j].DeepCopy()
		ns.Labels["team"] = fmt.Sprintf("t%d", (i+j+1)%3)
		s.Namespaces[j] = ns
	}
}

func pct(d []time.Duration, p int) time.Duration {
	return d[(len(d)-1)*p/100].Round(time.Microsecond)
}
