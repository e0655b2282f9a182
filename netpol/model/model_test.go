package model

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const node = "n1"

var nodeIP = netip.MustParseAddr("172.30.0.11")

func pod(ns, name, nodeName, ip string, lbl map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func namespace(name string, lbl map[string]string) *corev1.Namespace {
	l := map[string]string{corev1.LabelMetadataName: name}
	for k, v := range lbl {
		l[k] = v
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

// policy parses a NetworkPolicy in YAML (metadata.namespace defaults to "a").
func policy(t *testing.T, doc string) *networkingv1.NetworkPolicy {
	t.Helper()
	var p networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
		t.Fatalf("policy: %v\n%s", err, doc)
	}
	if p.Namespace == "" {
		p.Namespace = "a"
	}
	return &p
}

// The cluster the cases run against: namespaces a (team=alpha), b (team=beta),
// kube-system; the local pods live on n1.
func cluster() State {
	return State{
		Namespaces: []*corev1.Namespace{namespace("a", map[string]string{"team": "alpha"}), namespace("b", map[string]string{"team": "beta"}), namespace("kube-system", nil)},
		Pods: []*corev1.Pod{
			pod("a", "server", node, "10.244.1.10", map[string]string{"app": "server"},
				corev1.ContainerPort{Name: "http", ContainerPort: 8080}, corev1.ContainerPort{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP}),
			pod("a", "client", node, "10.244.1.11", map[string]string{"app": "client"}),
			pod("a", "remote", "n2", "10.244.2.10", map[string]string{"app": "client", "role": "db"},
				corev1.ContainerPort{Name: "http", ContainerPort: 9090}),
			pod("b", "client", "n2", "10.244.2.11", map[string]string{"app": "client"}),
			pod("b", "other", "n2", "10.244.2.12", map[string]string{"app": "other"}),
		},
	}
}

// check is one question: may pod (local, by IP) receive from / send to
// peer on proto/port?
type check struct {
	pod    string
	egress bool
	peer   string
	proto  uint8
	port   uint16
	want   bool
}

func in(podIP, peer string, proto uint8, port uint16, want bool) check {
	return check{podIP, false, peer, proto, port, want}
}

func out(podIP, peer string, proto uint8, port uint16, want bool) check {
	return check{podIP, true, peer, proto, port, want}
}

const (
	server  = "10.244.1.10"
	client  = "10.244.1.11"
	remote  = "10.244.2.10"
	bClient = "10.244.2.11"
	bOther  = "10.244.2.12"
	outside = "192.0.2.7"
	dnsAddr = "172.30.0.11"
)

func TestCompute(t *testing.T) {
	tests := []struct {
		name     string
		policies []string
		checks   []check
		errs     string
	}{
		{
			name: "no policy: nothing isolated",
			checks: []check{
				in(server, bClient, ProtoTCP, 80, true), out(server, outside, ProtoUDP, 9, true),
			},
		},
		{
			name: "default deny ingress of the namespace",
			policies: []string{`
metadata: {name: deny}
spec: {podSelector: {}, policyTypes: [Ingress]}`},
			checks: []check{
				in(server, client, ProtoTCP, 8080, false), in(client, remote, ProtoUDP, 53, false),
				out(server, outside, ProtoTCP, 443, true),
			},
		},
		{
			name: "default deny egress",
			policies: []string{`
metadata: {name: deny}
spec: {podSelector: {}, policyTypes: [Egress]}`},
			checks: []check{
				out(server, remote, ProtoTCP, 80, false), out(server, dnsAddr, ProtoUDP, 53, false),
				in(server, remote, ProtoTCP, 80, true),
			},
		},
		{
			name: "allow all ingress: one empty rule",
			policies: []string{`
metadata: {name: all}
spec: {podSelector: {}, ingress: [{}]}`},
			checks: []check{in(server, outside, ProtoSCTP, 1, true), in(server, bOther, 1, 0, true)},
		},
		{
			name: "a policy selecting other pods changes nothing for this one",
			policies: []string{`
metadata: {name: db}
spec: {podSelector: {matchLabels: {role: db}}, policyTypes: [Ingress, Egress]}`},
			checks: []check{in(server, bClient, ProtoTCP, 80, true), out(client, outside, ProtoTCP, 80, true)},
		},
		{
			name: "podSelector peer: same namespace only",
			policies: []string{`
metadata: {name: from-clients}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]`},
			checks: []check{
				in(server, client, ProtoTCP, 8080, true), in(server, remote, ProtoUDP, 1, true),
				in(server, bClient, ProtoTCP, 8080, false), in(server, outside, ProtoTCP, 8080, false),
				in(client, bClient, ProtoTCP, 80, true), // not selected
			},
		},
		{
			name: "namespaceSelector peer: every pod of the selected namespaces",
			policies: []string{`
metadata: {name: from-team-beta}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: beta}}}]}]`},
			checks: []check{
				in(server, bClient, ProtoTCP, 80, true), in(server, bOther, ProtoTCP, 80, true),
				in(server, client, ProtoTCP, 80, false), in(server, remote, ProtoTCP, 80, false),
			},
		},
		{
			name: "namespaceSelector and podSelector in one peer: both must match",
			policies: []string{`
metadata: {name: and}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: beta}}, podSelector: {matchLabels: {app: client}}}]}]`},
			checks: []check{
				in(server, bClient, ProtoTCP, 80, true), in(server, bOther, ProtoTCP, 80, false),
				in(server, client, ProtoTCP, 80, false),
			},
		},
		{
			name: "two peers: either matches",
			policies: []string{`
metadata: {name: or}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: beta}}}, {podSelector: {matchLabels: {app: client}}}]}]`},
			checks: []check{
				in(server, bClient, ProtoTCP, 80, true), in(server, bOther, ProtoTCP, 80, true),
				in(server, client, ProtoTCP, 80, true), in(server, outside, ProtoTCP, 80, false),
			},
		},
		{
			name: "namespaceSelector {} and matchExpressions",
			policies: []string{`
metadata: {name: expr}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [server]}]}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [other]}]}}]}]`},
			checks: []check{
				in(server, bClient, ProtoTCP, 80, true), in(server, client, ProtoTCP, 80, true),
				in(server, bOther, ProtoTCP, 80, false),
			},
		},
		{
			name: "ipBlock with except, pod addresses included",
			policies: []string{`
metadata: {name: cidr}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/24]}}]}]`},
			checks: []check{
				in(server, client, ProtoTCP, 80, true), in(server, "10.244.9.9", ProtoUDP, 5, true),
				in(server, remote, ProtoTCP, 80, false), in(server, outside, ProtoTCP, 80, false),
			},
		},
		{
			name: "an except of one policy is allowed by another (union)",
			policies: []string{`
metadata: {name: cidr}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/24]}}], ports: [{port: 80}]}]`, `
metadata: {name: remote}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {role: db}}}], ports: [{port: 443}]}]`},
			checks: []check{
				in(server, remote, ProtoTCP, 443, true), in(server, remote, ProtoTCP, 80, false),
				in(server, bClient, ProtoTCP, 443, false), in(server, client, ProtoTCP, 80, true),
				in(server, client, ProtoTCP, 443, false),
			},
		},
		{
			name: "ports: numbered, protocols, endPort, a port without number",
			policies: []string{`
metadata: {name: ports}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - ports: [{port: 80}, {protocol: UDP, port: 53}, {port: 8000, endPort: 8100}, {protocol: SCTP}]`},
			checks: []check{
				in(server, bClient, ProtoTCP, 80, true), in(server, bClient, ProtoUDP, 80, false),
				in(server, bClient, ProtoUDP, 53, true), in(server, bClient, ProtoTCP, 53, false),
				in(server, bClient, ProtoTCP, 8000, true), in(server, bClient, ProtoTCP, 8100, true),
				in(server, bClient, ProtoTCP, 8101, false), in(server, bClient, ProtoTCP, 7999, false),
				in(server, outside, ProtoSCTP, 9999, true), in(server, outside, 1, 0, false),
			},
		},
		{
			name: "named ports on ingress: the local pod's ports",
			policies: []string{`
metadata: {name: named}
spec:
  podSelector: {}
  ingress: [{ports: [{port: http}, {port: dns, protocol: UDP}, {port: nope}]}]`},
			checks: []check{
				in(server, bClient, ProtoTCP, 8080, true), in(server, bClient, ProtoUDP, 5353, true),
				in(server, bClient, ProtoTCP, 5353, false), in(server, bClient, ProtoTCP, 9090, false),
				in(client, bClient, ProtoTCP, 8080, false), // client declares no port
			},
		},
		{
			name: "named ports on egress: each destination's ports",
			policies: []string{`
metadata: {name: named}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {}}], ports: [{port: http}]}, {to: [{ipBlock: {cidr: 0.0.0.0/0}}], ports: [{port: http}]}]`},
			checks: []check{
				out(client, server, ProtoTCP, 8080, true), out(client, remote, ProtoTCP, 9090, true),
				out(client, remote, ProtoTCP, 8080, false), out(client, bOther, ProtoTCP, 8080, false),
				out(client, outside, ProtoTCP, 8080, false),
			},
		},
		{
			name: "policyTypes: Egress only leaves ingress open; default types follow the rules",
			policies: []string{`
metadata: {name: egress-only}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Egress]
  ingress: [{from: [{podSelector: {}}]}]
  egress: [{to: [{ipBlock: {cidr: 192.0.2.0/24}}]}]`, `
metadata: {name: both}
spec:
  podSelector: {matchLabels: {app: client}}
  egress: [{to: [{ipBlock: {cidr: 192.0.2.0/24}}]}]`},
			checks: []check{
				in(server, bClient, ProtoTCP, 80, true), out(server, outside, ProtoTCP, 80, true),
				out(server, remote, ProtoTCP, 80, false),
				in(client, bClient, ProtoTCP, 80, false), out(client, outside, ProtoTCP, 80, true),
			},
		},
		{
			name: "DNS: egress to namespace kube-system port 53 reaches the node's DNS",
			policies: []string{`
metadata: {name: dns}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}], ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]}]`},
			checks: []check{
				out(client, dnsAddr, ProtoUDP, 53, true), out(client, dnsAddr, ProtoTCP, 53, true),
				out(client, dnsAddr, ProtoTCP, 10250, false), out(client, outside, ProtoUDP, 53, false),
			},
		},
		{
			name: "DNS: kube-system without ports still means port 53 at the node",
			policies: []string{`
metadata: {name: dns}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]}]`},
			checks: []check{
				out(client, dnsAddr, ProtoUDP, 53, true), out(client, dnsAddr, ProtoTCP, 80, false),
				out(client, server, ProtoTCP, 80, false),
			},
		},
		{
			name: "DNS: by name, and a plain port-53 rule",
			policies: []string{`
metadata: {name: dns-by-name}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {}}], ports: [{port: dns, protocol: UDP}]}]`, `
metadata: {name: port-53}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}]`},
			checks: []check{
				out(server, dnsAddr, ProtoUDP, 53, true), out(server, dnsAddr, ProtoTCP, 53, false),
				out(server, server, ProtoUDP, 5353, true),
				out(client, dnsAddr, ProtoUDP, 53, true), out(client, outside, ProtoUDP, 53, true),
				out(client, outside, ProtoTCP, 53, false),
			},
		},
		{
			name: "DNS: a rule for another namespace does not reach it",
			policies: []string{`
metadata: {name: same-ns}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {}}]}]`},
			checks: []check{out(client, dnsAddr, ProtoUDP, 53, false), out(client, server, ProtoTCP, 1, true)},
		},
		{
			name: "a bad CIDR is reported and matches nothing; the rest applies",
			policies: []string{`
metadata: {name: bad}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}, {podSelector: {matchLabels: {app: client}}}]}]`},
			checks: []check{in(server, client, ProtoTCP, 80, true), in(server, "10.0.0.1", ProtoTCP, 80, false)},
			errs:   `NetworkPolicy a/bad: spec.ingress[0].from[0].ipBlock.cidr "10.0.0.0/33"`,
		},
		{
			name: "a port name no container declares matches nothing",
			policies: []string{`
metadata: {name: nosuch}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{ports: [{port: nosuch}, {port: http, protocol: UDP}]}]`},
			checks: []check{
				in(server, client, ProtoTCP, 8080, false), in(server, client, ProtoUDP, 8080, false),
				in(server, outside, ProtoTCP, 80, false), in(client, server, ProtoTCP, 80, true),
			},
		},
		{
			name: "a policy that selects nothing changes nothing",
			policies: []string{`
metadata: {name: nobody}
spec: {podSelector: {matchLabels: {app: nobody}}, policyTypes: [Ingress, Egress]}`},
			checks: []check{
				in(server, bClient, ProtoTCP, 80, true), out(server, outside, ProtoTCP, 443, true),
				in(client, remote, ProtoUDP, 53, true), out(client, bOther, ProtoTCP, 1, true),
			},
		},
		{
			name: "policies of another namespace do not select",
			policies: []string{`
metadata: {name: deny, namespace: b}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}`},
			checks: []check{in(server, bClient, ProtoTCP, 80, true), out(server, bClient, ProtoTCP, 80, true)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := cluster()
			for _, doc := range tt.policies {
				s.Policies = append(s.Policies, policy(t, doc))
			}
			opts := Options{NodeName: node, DNS: NodeDNS(nodeIP)}
			eps, err := Compute(s, opts)
			// The incremental model, from empty, says the same.
			if m, merr := NewModel(opts).Update(s); describe(m, merr) != describe(eps, err) {
				t.Errorf("Model:\n%s\nCompute:\n%s", describe(m, merr), describe(eps, err))
			}
			if tt.errs == "" && err != nil {
				t.Fatalf("Compute: %v", err)
			}
			if tt.errs != "" && (err == nil || !strings.Contains(err.Error(), tt.errs)) {
				t.Fatalf("Compute error %v, want it to contain %q", err, tt.errs)
			}
			if len(eps) != 2 {
				t.Fatalf("local endpoints %v, want the two pods of node %s", eps, node)
			}
			for _, c := range tt.checks {
				ep := eps[netip.MustParseAddr(c.pod)]
				if ep == nil {
					t.Fatalf("no endpoint for %s", c.pod)
				}
				if got := ep.Allows(c.egress, netip.MustParseAddr(c.peer), c.proto, c.port); got != c.want {
					dir := map[bool]string{false: "from", true: "to"}[c.egress]
					t.Errorf("%s %s %s proto %d port %d: allowed %v, want %v (ingress %v, egress %v)",
						ep.Pod, dir, c.peer, c.proto, c.port, got, c.want, ep.Ingress, ep.Egress)
				}
			}
		})
	}
}
