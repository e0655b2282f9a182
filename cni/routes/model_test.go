package routes

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name, ip, cidr string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
	if cidr != "" {
		n.Spec.PodCIDRs = []string{cidr}
	}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: name},
			{Type: corev1.NodeInternalIP, Address: ip},
		}
	}
	return n
}

func peers(d Desired) string {
	var s []string
	for _, p := range d.Peers {
		s = append(s, fmt.Sprintf("%s=%s via %s", p.Node, p.PodCIDR, p.NodeIP))
	}
	return strings.Join(s, "; ")
}

func TestBuildRoutesEveryOtherNode(t *testing.T) {
	nodes := []*corev1.Node{
		node("n3", "172.30.0.13", "10.244.2.0/24"),
		node("n1", "172.30.0.11", "10.244.0.0/24"),
		node("n2", "172.30.0.12", "10.244.1.0/24"),
	}
	d, skipped := Build("n1", netip.Addr{}, nodes)
	if len(skipped) != 0 {
		t.Fatalf("skipped %v", skipped)
	}
	if want := "n2=10.244.1.0/24 via 172.30.0.12; n3=10.244.2.0/24 via 172.30.0.13"; peers(d) != want {
		t.Fatalf("peers %q, want %q", peers(d), want)
	}
	if d.Self.PodCIDR.String() != "10.244.0.0/24" || d.Self.NodeIP.String() != "172.30.0.11" {
		t.Fatalf("self %+v", d.Self)
	}
	if fmt.Sprint(d.NodeIPs) != "[172.30.0.11 172.30.0.12 172.30.0.13]" {
		t.Fatalf("node IPs %v", d.NodeIPs)
	}
	if v := d.Peers[0].VTEP().String(); v != "10.244.1.1" {
		t.Errorf("VTEP of n2 %s, want 10.244.1.1", v)
	}
	if m := d.Peers[0].VTEPMAC().String(); m != "0e:73:ac:1e:00:0c" {
		t.Errorf("VTEP MAC of n2 %s", m)
	}
}

func TestBuildLeavesOutNodesNotReady(t *testing.T) {
	nodes := []*corev1.Node{
		node("self", "172.30.0.11", "10.244.0.0/24"),
		node("no-cidr", "172.30.0.12", ""),
		node("no-ip", "", "10.244.2.0/24"),
		node("v6-only", "fd00::1", "fd00:10::/64"),
		node("overlaps-self", "172.30.0.14", "10.244.0.0/25"),
		node("good", "172.30.0.15", "10.244.5.0/24"),
	}
	d, skipped := Build("self", netip.Addr{}, nodes)
	if peers(d) != "good=10.244.5.0/24 via 172.30.0.15" {
		t.Fatalf("peers %q, want only the good node", peers(d))
	}
	if len(skipped) != 4 {
		t.Fatalf("skipped %v, want 4 reasons", skipped)
	}
	joined := fmt.Sprint(skipped)
	for _, want := range []string{"no-cidr has no IPv4 pod range", "no-ip has no IPv4 InternalIP", "overlaps node self's"} {
		if !strings.Contains(joined, want) {
			t.Errorf("reasons %q lack %q", joined, want)
		}
	}
}

func TestBuildNodeIPOverrideAndMissingSelf(t *testing.T) {
	d, _ := Build("n1", netip.MustParseAddr("192.168.1.1"), []*corev1.Node{node("n2", "172.30.0.12", "10.244.1.0/24")})
	if d.Self.NodeIP.String() != "192.168.1.1" || d.Self.PodCIDR.IsValid() {
		t.Fatalf("self %+v: want the given address and no range before the Node exists", d.Self)
	}
	if len(d.Peers) != 1 || fmt.Sprint(d.NodeIPs) != "[172.30.0.12 192.168.1.1]" {
		t.Fatalf("desired %+v", d)
	}
}

func TestPodCIDRFallsBackToPodCIDRs(t *testing.T) {
	n := node("n", "172.30.0.11", "")
	n.Spec.PodCIDRs = []string{"fd00::/64", "10.244.9.0/24"}
	if got := PodCIDR(n).String(); got != "10.244.9.0/24" {
		t.Fatalf("PodCIDR %s", got)
	}
}
