package policymap

import (
	"encoding/binary"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/bpf/bpftest"
	"github.com/skiffnet/skiff/netpol/model"
)

// tc verdicts (linux/pkt_cls.h).
const (
	pass = ^uint32(0) // TC_ACT_UNSPEC
	drop = 2          // TC_ACT_SHOT
)

var (
	server   = netip.MustParseAddr("10.244.1.10")
	client   = netip.MustParseAddr("10.244.1.11")
	remote   = netip.MustParseAddr("10.244.2.10")
	outsider = netip.MustParseAddr("192.0.2.7")
	nodeAddr = netip.MustParseAddr("172.30.0.11")
)

type pkt struct {
	src, dst netip.AddrPort
	proto    uint8
	flags    uint8 // TCP
}

// bytes builds an Ethernet/IPv4 packet; the programs read no checksum.
func (p pkt) bytes() []byte {
	b := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = p.proto
	s, d := p.src.Addr().As4(), p.dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	l4 := ip[20:]
	binary.BigEndian.PutUint16(l4[0:], p.src.Port())
	binary.BigEndian.PutUint16(l4[2:], p.dst.Port())
	if p.proto == model.ProtoTCP {
		l4[12] = 5 << 4
		l4[13] = p.flags
	}
	return b
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// run passes p through prog; fromHost makes it locally generated
// (ingress_ifindex 0), else it came in on lo.
func run(t *testing.T, prog *ebpf.Program, p pkt, fromHost bool) uint32 {
	t.Helper()
	skb := make([]uint32, 12) // struct __sk_buff up to tc_index
	if !fromHost {
		skb[9] = 1 // ingress_ifindex
	}
	in := p.bytes()
	ret, err := prog.Run(&ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+64), Context: skb})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return ret
}

func loadPolicy(t *testing.T, pins string) *bpf.Policy {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	p, err := bpf.LoadPolicy(pins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func testPod(name, ip string, lbl map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name, Labels: lbl},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

func state(policies ...*networkingv1.NetworkPolicy) model.State {
	remotePod := testPod("remote", remote.String(), map[string]string{"app": "client"})
	remotePod.Spec.NodeName = "n2"
	return model.State{
		Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{corev1.LabelMetadataName: "a"}}}},
		Pods: []*corev1.Pod{
			testPod("server", server.String(), map[string]string{"app": "server"}, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
			testPod("client", client.String(), map[string]string{"app": "client"}),
			remotePod,
		},
		Policies: policies,
	}
}

func apply(t *testing.T, w *Writer, s model.State) {
	t.Helper()
	eps, err := model.Compute(s, model.Options{NodeName: "n1", DNS: model.NodeDNS(nodeAddr)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Apply(eps); err != nil {
		t.Fatal(err)
	}
}

// serverPolicy lets pods labelled app=client reach the server on its
// named port "http" and on 9000-9010/UDP; egress is default deny but for
// the node's DNS (kube-system, port 53).
func serverPolicy() *networkingv1.NetworkPolicy {
	udp := corev1.ProtocolUDP
	end := int32(9010)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "server"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{
					{Port: &intstr.IntOrString{Type: intstr.String, StrVal: "http"}},
					{Protocol: &udp, Port: &intstr.IntOrString{IntVal: 9000}, EndPort: &end},
				},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "kube-system"}}}},
			}},
		},
	}
}

func TestEnforcement(t *testing.T) {
	p := loadPolicy(t, bpftest.BPFFS(t))
	w, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	// No policy: nothing is dropped.
	apply(t, w, state())
	if got := run(t, p.ToPod, pkt{ap(outsider, 1234), ap(server, 80), model.ProtoTCP, 0x02}, false); got != pass {
		t.Fatalf("without policy: verdict %d, want pass", got)
	}

	apply(t, w, state(serverPolicy()))
	for _, c := range []struct {
		name     string
		prog     *ebpf.Program
		p        pkt
		fromHost bool
		want     uint32
	}{
		{"client to the named port", p.ToPod, pkt{ap(client, 40000), ap(server, 8080), model.ProtoTCP, 0x02}, false, pass},
		{"remote client to the named port", p.ToPod, pkt{ap(remote, 40000), ap(server, 8080), model.ProtoTCP, 0x02}, false, pass},
		{"client to another port", p.ToPod, pkt{ap(client, 40001), ap(server, 8081), model.ProtoTCP, 0x02}, false, drop},
		{"client to the UDP range's end", p.ToPod, pkt{ap(client, 40002), ap(server, 9010), model.ProtoUDP, 0}, false, pass},
		{"client past the UDP range", p.ToPod, pkt{ap(client, 40003), ap(server, 9011), model.ProtoUDP, 0}, false, drop},
		{"outsider to the named port", p.ToPod, pkt{ap(outsider, 40000), ap(server, 8080), model.ProtoTCP, 0x02}, false, drop},
		{"the node (a probe)", p.ToPod, pkt{ap(nodeAddr, 50000), ap(server, 8081), model.ProtoTCP, 0x02}, true, pass},
		{"server's reply to an allowed client", p.FromPod, pkt{ap(server, 8080), ap(client, 40000), model.ProtoTCP, 0x12}, false, pass},
		{"server's reply to the probe", p.FromPod, pkt{ap(server, 8081), ap(nodeAddr, 50000), model.ProtoTCP, 0x12}, false, pass},
		{"server to the node's DNS", p.FromPod, pkt{ap(server, 5000), ap(nodeAddr, 53), model.ProtoUDP, 0}, false, pass},
		{"server to the node's kubelet", p.FromPod, pkt{ap(server, 5001), ap(nodeAddr, 10250), model.ProtoTCP, 0x02}, false, drop},
		{"server to the remote pod", p.FromPod, pkt{ap(server, 5002), ap(remote, 80), model.ProtoTCP, 0x02}, false, drop},
		{"unselected client sends anywhere", p.FromPod, pkt{ap(client, 5003), ap(outsider, 80), model.ProtoTCP, 0x02}, false, pass},
	} {
		if got := run(t, c.prog, c.p, c.fromHost); got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
	stats, err := p.ReadStats()
	if err != nil {
		t.Fatal(err)
	}
	if stats[bpf.PolicyDropIngress] != 3 || stats[bpf.PolicyDropEgress] != 2 {
		t.Errorf("drop counters %v, want 3 ingress and 2 egress", stats)
	}

	// A restarted agent's writer takes over the maps: the connection
	// tracked so far keeps passing, the policy keeps applying, and the
	// previous generation's entries go.
	rulesBefore := count(t, p.Rules)
	w2, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, w2, state(serverPolicy()))
	if got := count(t, p.Rules); got != rulesBefore {
		t.Errorf("after the takeover %d rule entries, want %d", got, rulesBefore)
	}
	if got := run(t, p.ToPod, pkt{ap(client, 40000), ap(server, 8080), model.ProtoTCP, 0x10}, false); got != pass {
		t.Errorf("tracked flow after the takeover: verdict %d, want pass", got)
	}
	if got := run(t, p.ToPod, pkt{ap(outsider, 40009), ap(server, 8080), model.ProtoTCP, 0x02}, false); got != drop {
		t.Errorf("outsider after the takeover: verdict %d, want drop", got)
	}

	// An edit is applied in place: the UDP range goes, the rest stays.
	edited := serverPolicy()
	edited.Spec.Ingress[0].Ports = edited.Spec.Ingress[0].Ports[:1]
	apply(t, w2, state(edited))
	if got := run(t, p.ToPod, pkt{ap(client, 40020), ap(server, 9005), model.ProtoUDP, 0}, false); got != drop {
		t.Errorf("UDP range after the edit: verdict %d, want drop", got)
	}
	if got := run(t, p.ToPod, pkt{ap(client, 40021), ap(server, 8080), model.ProtoTCP, 0x02}, false); got != pass {
		t.Errorf("named port after the edit: verdict %d, want pass", got)
	}
	if got := count(t, p.Ports); got != 3 { // tcp/8080 for ingress; tcp/53, udp/53 for egress
		t.Errorf("pol_ports holds %d entries after the edit, want 3", got)
	}

	// Removing the policy restores access and empties the maps.
	apply(t, w2, state())
	if got := run(t, p.ToPod, pkt{ap(outsider, 40010), ap(server, 8081), model.ProtoTCP, 0x02}, false); got != pass {
		t.Errorf("after removal: verdict %d, want pass", got)
	}
	for name, m := range map[string]*ebpf.Map{"pol_endpoints": p.Endpoints, "pol_rules": p.Rules, "pol_ports": p.Ports} {
		if n := count(t, m); n != 0 {
			t.Errorf("%s holds %d entries after the policy is gone", name, n)
		}
	}
}

// SCTP is matched like TCP and UDP: by protocol and port, replies
// through connection tracking. Upstream's [Feature:SCTPConnectivity]
// Netpol tests cannot run on a kernel without SCTP (this machine's);
// this test runs the program itself on SCTP packets, which needs no SCTP
// in the kernel.
func TestEnforcementSCTP(t *testing.T) {
	p := loadPolicy(t, bpftest.BPFFS(t))
	w, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	sctp := corev1.ProtocolSCTP
	pol := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "sctp"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &sctp, Port: &intstr.IntOrString{IntVal: 9100}}},
			}},
		},
	}
	apply(t, w, state(pol))
	for _, tc := range []struct {
		name string
		prog *ebpf.Program
		p    pkt
		want uint32
	}{
		{"client to the SCTP port", p.ToPod, pkt{ap(client, 40000), ap(server, 9100), model.ProtoSCTP, 0}, pass},
		{"server's SCTP reply", p.FromPod, pkt{ap(server, 9100), ap(client, 40000), model.ProtoSCTP, 0}, pass},
		{"client to another SCTP port", p.ToPod, pkt{ap(client, 40001), ap(server, 9101), model.ProtoSCTP, 0}, drop},
		{"client to the port over TCP", p.ToPod, pkt{ap(client, 40002), ap(server, 9100), model.ProtoTCP, 0x02}, drop},
		{"outsider to the SCTP port", p.ToPod, pkt{ap(outsider, 40003), ap(server, 9100), model.ProtoSCTP, 0}, drop},
	} {
		if got := run(t, tc.prog, tc.p, false); got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
}

func count(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	n := 0
	k := make([]byte, m.KeySize())
	it := m.Iterate()
	var v []byte
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPortKeys(t *testing.T) {
	for _, c := range []struct {
		r    model.PortRange
		want int
	}{
		{model.PortRange{Proto: 6, First: 80, Last: 80}, 1},
		{model.PortRange{Proto: 6, First: 0, Last: 65535}, 1},
		{model.PortRange{Proto: 6, First: 8000, Last: 8100}, 4},
		{model.PortRange{Proto: 6, First: 1, Last: 65535}, 16},
	} {
		keys := portKeys(1, model.PortSet{Ranges: []model.PortRange{c.r}})
		if len(keys) != c.want {
			t.Errorf("%v: %d keys, want %d", c.r, len(keys), c.want)
		}
		covered := 0
		for _, k := range keys {
			covered += 1 << (16 - (k.Prefixlen - bpf.PolicyPortPrefixBase))
		}
		if covered != int(c.r.Last)-int(c.r.First)+1 {
			t.Errorf("%v: keys cover %d ports", c.r, covered)
		}
	}
}
