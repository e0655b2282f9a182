package model

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestModelMatchesCompute drives Model through random sequences of changes
// (namespaces, pods and policies created, relabelled, readdressed,
// rescheduled, deleted, several at once) and checks after every Update
// that it says exactly what Compute says from scratch, problems included.
// The pools are small so that selectors, CIDRs and addresses collide.
func TestModelMatchesCompute(t *testing.T) {
	const sequences, steps = 300, 40
	for seed := range uint64(sequences) {
		g := &gen{r: rand.New(rand.NewPCG(seed, 15))}
		opts := Options{NodeName: "n1", DNS: NodeDNS(netip.MustParseAddr("10.0.0.9"))}
		s := g.state()
		m := NewModel(opts)
		for step := range steps {
			got, gotErr := m.Update(s)
			want, wantErr := Compute(s, opts)
			if d, w := describe(got, gotErr), describe(want, wantErr); d != w {
				t.Fatalf("seed %d step %d: Model and Compute differ after %s\nModel:\n%s\nCompute:\n%s", seed, step, g.last, d, w)
			}
			g.last = nil
			for range 1 + g.r.IntN(3) {
				g.change(&s)
			}
		}
	}
}

// describe renders endpoints and problems canonically (nil and empty
// entry lists alike).
func describe(eps map[netip.Addr]*Endpoint, err error) string {
	var lines []string
	for ip, ep := range eps {
		l := fmt.Sprintf("%s %s %v in=%v out=%v", ip, ep.Pod, ep.Policies, ep.IngressIsolated, ep.EgressIsolated)
		for dir, entries := range [][]Entry{ep.Ingress, ep.Egress} {
			for _, e := range entries {
				l += fmt.Sprintf("\n    %d %s %s", dir, e.Prefix, e.Ports)
			}
		}
		lines = append(lines, l)
	}
	slices.Sort(lines)
	if err != nil {
		lines = append(lines, "errors: "+err.Error())
	}
	return strings.Join(lines, "\n")
}

type gen struct {
	r    *rand.Rand
	last []string // the changes since the last check, for the failure message
}

var (
	genNamespaces = []string{"a", "b", "c", "kube-system"}
	genAddrs      = []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.0.9", "192.0.2.1"}
	genCIDRs      = []string{"10.0.0.0/8", "10.0.0.0/24", "10.0.1.0/24", "10.0.0.2/32", "10.0.0.0/30", "0.0.0.0/0", "192.0.2.0/24", "10.0.0.0/33", "fd00::/64"}
)

func (g *gen) pick(s []string) string { return s[g.r.IntN(len(s))] }

func (g *gen) labels(keys ...string) map[string]string {
	l := map[string]string{}
	for _, k := range keys {
		if g.r.IntN(3) > 0 {
			l[k] = fmt.Sprintf("%s%d", k, g.r.IntN(2))
		}
	}
	return l
}

func (g *gen) state() State {
	var s State
	for range 30 {
		g.change(&s)
	}
	return s
}

// change makes one random change to s, replacing objects, never
// modifying them (as informers do).
func (g *gen) change(s *State) {
	switch g.r.IntN(9) {
	case 0: // a namespace created or relabelled
		name := g.pick(genNamespaces)
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: g.labels("team", "env")}}
		ns.Labels[corev1.LabelMetadataName] = name
		s.Namespaces = replace(s.Namespaces, ns, func(o *corev1.Namespace) bool { return o.Name == name })
		g.last = append(g.last, "namespace "+name+" set")
	case 1: // a namespace deleted
		if len(s.Namespaces) > 0 {
			i := g.r.IntN(len(s.Namespaces))
			g.last = append(g.last, "namespace "+s.Namespaces[i].Name+" deleted")
			s.Namespaces = slices.Delete(s.Namespaces, i, i+1)
		}
	case 2, 3, 4: // a pod created, or changed in any way
		name := fmt.Sprintf("p%d", g.r.IntN(14))
		p := g.pod(name)
		s.Pods = replace(s.Pods, p, func(o *corev1.Pod) bool { return o.Namespace == p.Namespace && o.Name == name })
		g.last = append(g.last, fmt.Sprintf("pod %s/%s set: ip %s node %s labels %v", p.Namespace, name, p.Status.PodIP, p.Spec.NodeName, p.Labels))
	case 5: // a pod's status changes, nothing policy sees
		if len(s.Pods) > 0 {
			i := g.r.IntN(len(s.Pods))
			p := s.Pods[i].DeepCopy()
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady})
			s.Pods[i] = p
			g.last = append(g.last, "pod "+p.Name+" status")
		}
	case 6: // a pod deleted
		if len(s.Pods) > 0 {
			i := g.r.IntN(len(s.Pods))
			g.last = append(g.last, "pod "+s.Pods[i].Namespace+"/"+s.Pods[i].Name+" deleted")
			s.Pods = slices.Delete(s.Pods, i, i+1)
		}
	case 7: // a policy created or edited
		pol := g.policy(fmt.Sprintf("np%d", g.r.IntN(8)))
		s.Policies = replace(s.Policies, pol, func(o *networkingv1.NetworkPolicy) bool { return o.Namespace == pol.Namespace && o.Name == pol.Name })
		g.last = append(g.last, "policy "+pol.Namespace+"/"+pol.Name+" set")
	case 8: // a policy deleted
		if len(s.Policies) > 0 {
			i := g.r.IntN(len(s.Policies))
			g.last = append(g.last, "policy "+s.Policies[i].Namespace+"/"+s.Policies[i].Name+" deleted")
			s.Policies = slices.Delete(s.Policies, i, i+1)
		}
	}
}

func replace[T any](list []T, v T, same func(T) bool) []T {
	if i := slices.IndexFunc(list, same); i >= 0 {
		list[i] = v
		return list
	}
	return append(list, v)
}

func (g *gen) pod(name string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: g.pick(genNamespaces[:3]), Name: name, Labels: g.labels("app", "role")},
		Spec:       corev1.PodSpec{NodeName: g.pick([]string{"n1", "n1", "n2", ""})},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: g.pick(genAddrs)},
	}
	if g.r.IntN(8) == 0 {
		p.Status.PodIP = ""
	}
	if g.r.IntN(8) == 0 {
		p.Status.Phase = corev1.PodSucceeded
	}
	if g.r.IntN(6) == 0 {
		p.DeletionTimestamp = &metav1.Time{}
	}
	var ports []corev1.ContainerPort
	for range g.r.IntN(3) {
		ports = append(ports, corev1.ContainerPort{Name: g.pick([]string{"http", "dns", "metrics"}),
			ContainerPort: int32(80 + g.r.IntN(3)), Protocol: corev1.Protocol(g.pick([]string{"TCP", "UDP"}))})
	}
	p.Spec.Containers = []corev1.Container{{Name: "c", Ports: ports}}
	return p
}

func (g *gen) selector(keys ...string) *metav1.LabelSelector {
	switch g.r.IntN(6) {
	case 0:
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: keys[0], Operator: metav1.LabelSelectorOpExists}}}
	case 2:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: keys[0], Operator: "Bogus"}}}
	}
	return &metav1.LabelSelector{MatchLabels: g.labels(keys...)}
}

func (g *gen) policy(name string) *networkingv1.NetworkPolicy {
	pol := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: g.pick(genNamespaces[:3]), Name: name}}
	pol.Spec.PodSelector = *g.selector("app", "role")
	for _, t := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
		if g.r.IntN(2) == 0 {
			pol.Spec.PolicyTypes = append(pol.Spec.PolicyTypes, t)
		}
	}
	for range g.r.IntN(3) {
		pol.Spec.Ingress = append(pol.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers(), Ports: g.ports()})
	}
	for range g.r.IntN(3) {
		pol.Spec.Egress = append(pol.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: g.peers(), Ports: g.ports()})
	}
	return pol
}

func (g *gen) peers() []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for range g.r.IntN(3) {
		var p networkingv1.NetworkPolicyPeer
		switch g.r.IntN(4) {
		case 0:
			p.IPBlock = &networkingv1.IPBlock{CIDR: g.pick(genCIDRs)}
			for range g.r.IntN(2) {
				p.IPBlock.Except = append(p.IPBlock.Except, g.pick(genCIDRs))
			}
		case 1:
			p.PodSelector = g.selector("app", "role")
		case 2:
			p.NamespaceSelector = g.selector("team", "env")
		case 3:
			p.PodSelector, p.NamespaceSelector = g.selector("app", "role"), g.selector("team", "env")
		}
		out = append(out, p)
	}
	return out
}

func (g *gen) ports() []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for range g.r.IntN(3) {
		proto := corev1.Protocol(g.pick([]string{"TCP", "UDP"}))
		p := networkingv1.NetworkPolicyPort{Protocol: &proto}
		switch g.r.IntN(4) {
		case 0:
			p.Port = &intstr.IntOrString{Type: intstr.String, StrVal: g.pick([]string{"http", "dns", "nosuch"})}
		case 1:
			port := intstr.FromInt32(int32(80 + g.r.IntN(3)))
			p.Port = &port
		case 2:
			port, end := intstr.FromInt32(int32(53+g.r.IntN(40))), int32(60+g.r.IntN(40))
			p.Port, p.EndPort = &port, &end
		}
		out = append(out, p)
	}
	return out
}
