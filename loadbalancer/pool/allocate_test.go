package pool

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffnet/skiff/loadbalancer/api"
)

// svc is a Service aged age seconds with TCP ports; options change it.
func svc(name string, age int, ports []int32, opts ...func(*Service)) Service {
	s := Service{Name: types.NamespacedName{Namespace: "ns", Name: name}, Created: epoch.Add(-time.Duration(age) * time.Second), Labels: labels.Set{}}
	for _, p := range ports {
		s.Ports = append(s.Ports, Port{Number: p, Proto: v1.ProtocolTCP})
	}
	for _, o := range opts {
		o(&s)
	}
	return s
}

func holds(addr string) func(*Service) {
	return func(s *Service) { s.Current = append(s.Current, netip.MustParseAddr(addr)) }
}
func asks(addr string) func(*Service) {
	return func(s *Service) { s.Requested = netip.MustParseAddr(addr) }
}
func key(k string) func(*Service)      { return func(s *Service) { s.SharingKey = k } }
func label(k, v string) func(*Service) { return func(s *Service) { s.Labels[k] = v } }
func local(sel string) func(*Service)  { return func(s *Service) { s.Local, s.Selector = true, sel } }
func udp(p int32) func(*Service) {
	return func(s *Service) { s.Ports = append(s.Ports, Port{p, v1.ProtocolUDP}) }
}

func parsed(p *api.Pool) Pool { return Parse(p) }

// want is "ADDR" for an assignment, or "!Reason: message part" for a
// pending Service.
func check(t *testing.T, got Outcome, want string) {
	t.Helper()
	if r, ok := strings.CutPrefix(want, "!"); ok {
		reason, msg, _ := strings.Cut(r, ": ")
		if got.Assigned() || got.Reason != reason || !strings.Contains(got.Message, msg) {
			t.Errorf("got %v %s %q, want pending %s %q", got.Addrs, got.Reason, got.Message, reason, msg)
		}
		return
	}
	if addrList(got.Addrs) != want {
		t.Errorf("got %v (%s: %s), want %s", got.Addrs, got.Reason, got.Message, want)
	}
}

func TestAllocate(t *testing.T) {
	small := parsed(apiPool("small", 10, span("192.168.9.1", "192.168.9.3")))
	web := apiPool("web", 5, cidr("192.168.8.0/30")) // .1 and .2
	web.Spec.ServiceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}}
	off := apiPool("off", 3, span("192.168.7.1", "192.168.7.9"))
	off.Spec.Disabled = true
	pools := []Pool{small, parsed(web), parsed(off)}

	for _, tc := range []struct {
		name  string
		pools []Pool
		svcs  []Service
		want  map[string]string
	}{
		{"lowest free, oldest first", pools,
			[]Service{svc("b", 1, []int32{80}), svc("a", 2, []int32{80})},
			map[string]string{"a": "192.168.9.1", "b": "192.168.9.2"}},
		{"keeps its address", pools,
			[]Service{svc("new", 1, []int32{80}), svc("old", 2, []int32{80}, holds("192.168.9.3"))},
			map[string]string{"old": "192.168.9.3", "new": "192.168.9.1"}},
		{"duplicate in status: the older keeps it", pools,
			[]Service{svc("young", 1, []int32{80}, holds("192.168.9.2")), svc("old", 2, []int32{80}, holds("192.168.9.2"))},
			map[string]string{"old": "192.168.9.2", "young": "192.168.9.1"}},
		{"exhausted", pools,
			[]Service{svc("a", 4, []int32{80}), svc("b", 3, []int32{80}), svc("c", 2, []int32{80}), svc("d", 1, []int32{80})},
			map[string]string{"a": "192.168.9.1", "b": "192.168.9.2", "c": "192.168.9.3", "d": "!PoolExhausted: LoadBalancerPool small has no free address"}},
		{"selector picks the pool", pools,
			[]Service{svc("w", 1, []int32{80}, label("tier", "web"))},
			map[string]string{"w": "192.168.9.1"}}, // small selects all and is older
		{"requested", pools,
			[]Service{svc("a", 2, []int32{80}), svc("r", 1, []int32{80}, asks("192.168.9.1"))},
			map[string]string{"a": "192.168.9.2", "r": "192.168.9.1"}},
		{"requested held by an older Service", pools,
			[]Service{svc("a", 2, []int32{80}, holds("192.168.9.1")), svc("r", 1, []int32{80}, asks("192.168.9.1"))},
			map[string]string{"a": "192.168.9.1", "r": "!AddressConflict: held by Service ns/a"}},
		{"requested outside every pool", pools,
			[]Service{svc("r", 1, []int32{80}, asks("10.9.9.9"))},
			map[string]string{"r": "!RequestOutsidePools: 10.9.9.9 is in no LoadBalancerPool"}},
		{"requested from a pool that does not select it", pools,
			[]Service{svc("r", 1, []int32{80}, asks("192.168.8.1"))},
			map[string]string{"r": "!RequestOutsidePools: does not select this Service"}},
		{"requested from a disabled pool", pools,
			[]Service{svc("r", 1, []int32{80}, asks("192.168.7.1"))},
			map[string]string{"r": "!RequestOutsidePools: disabled"}},
		{"a disabled pool keeps what it gave", pools,
			[]Service{svc("k", 1, []int32{80}, holds("192.168.7.4"))},
			map[string]string{"k": "192.168.7.4"}},
		{"request changed: moves", pools,
			[]Service{svc("r", 1, []int32{80}, holds("192.168.9.1"), asks("192.168.9.3"))},
			map[string]string{"r": "192.168.9.3"}},
		{"sharing key, disjoint ports", pools,
			[]Service{svc("http", 2, []int32{80}, key("k")), svc("dns", 1, []int32{53}, udp(53), key("k"))},
			map[string]string{"http": "192.168.9.1", "dns": "192.168.9.1"}},
		{"sharing key, same port", pools,
			[]Service{svc("a", 2, []int32{80}, key("k")), svc("b", 1, []int32{80}, key("k"))},
			map[string]string{"a": "192.168.9.1", "b": "192.168.9.2"}},
		{"requested shared address", pools,
			[]Service{svc("a", 2, []int32{80}, key("k"), asks("192.168.9.3")), svc("b", 1, []int32{443}, key("k"), asks("192.168.9.3"))},
			map[string]string{"a": "192.168.9.3", "b": "192.168.9.3"}},
		{"requested address, same port", pools,
			[]Service{svc("a", 2, []int32{80}, key("k"), asks("192.168.9.3")), svc("b", 1, []int32{80}, key("k"), asks("192.168.9.3"))},
			map[string]string{"a": "192.168.9.3", "b": "!AddressConflict: port 80/TCP is already served on it by Service ns/a"}},
		{"requested, no key", pools,
			[]Service{svc("a", 2, []int32{80}, asks("192.168.9.3")), svc("b", 1, []int32{443}, asks("192.168.9.3"))},
			map[string]string{"b": "!AddressConflict: lb.skiff.io/sharing-key"}},
		{"local sharing needs one selector", pools,
			[]Service{svc("a", 2, []int32{80}, key("k"), local("app=a"), asks("192.168.9.3")), svc("b", 1, []int32{443}, key("k"), local("app=b"), asks("192.168.9.3"))},
			map[string]string{"b": "!AddressConflict: another selector"}},
		{"sharing needs one policy", pools,
			[]Service{svc("a", 2, []int32{80}, key("k"), asks("192.168.9.3")), svc("b", 1, []int32{443}, key("k"), local("app=b"), asks("192.168.9.3"))},
			map[string]string{"b": "!AddressConflict: same policy"}},
		{"bad request", pools,
			[]Service{func() Service {
				s := svc("bad", 1, []int32{80})
				s.RequestErr = fmt.Errorf("spec.loadBalancerIP \"x\" is not an IP address")
				return s
			}()},
			map[string]string{"bad": "!InvalidRequest: spec.loadBalancerIP"}},
		{"only a disabled pool", []Pool{parsed(off)},
			[]Service{svc("a", 1, []int32{80})},
			map[string]string{"a": "!NoPool: no enabled, valid LoadBalancerPool selects this Service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Allocate(Input{Pools: tc.pools, Services: tc.svcs})
			for name, want := range tc.want {
				check(t, res.Services[types.NamespacedName{Namespace: "ns", Name: name}], want)
			}
			noDuplicates(t, res)
		})
	}
}

// noDuplicates checks the one rule that matters most: an address held by
// two Services only when they share it with one key.
func noDuplicates(t *testing.T, res Result) {
	t.Helper()
	owners := map[netip.Addr][]types.NamespacedName{}
	for n, o := range res.Services {
		if o.Pool == "" {
			continue
		}
		for _, a := range o.Addrs {
			owners[a] = append(owners[a], n)
		}
	}
	for a, ns := range owners {
		if len(ns) > 1 && !strings.Contains(t.Name(), "shar") {
			t.Errorf("address %s given to %v", a, ns)
		}
	}
}

func TestPoolState(t *testing.T) {
	res := Allocate(Input{
		Pools:    []Pool{parsed(apiPool("p", 2, cidr("192.168.9.0/29"))), parsed(apiPool("bad", 1, cidr("192.168.9.0/30")))},
		Services: []Service{svc("a", 2, []int32{80}, key("k")), svc("b", 1, []int32{81}, key("k")), svc("c", 1, []int32{80})},
	})
	if st := res.Pools["p"]; st.Used != 2 || st.Free != 4 || st.Err != nil {
		t.Errorf("pool p: %+v, want 2 used (one shared) and 4 free", st)
	}
	if st := res.Pools["bad"]; st.Err == nil {
		t.Errorf("overlapping pool bad has no error")
	}
}

func TestNodeMode(t *testing.T) {
	nodes := []Node{
		{Name: "n1", Addr: netip.MustParseAddr("172.30.0.11"), Ready: true},
		{Name: "n2", Addr: netip.MustParseAddr("172.30.0.12"), Ready: true, Ports: []Port{{8443, v1.ProtocolTCP}}},
		{Name: "n3", Addr: netip.MustParseAddr("172.30.0.13"), Ready: false},
	}
	daemons := []NamedPort{{Port{80, v1.ProtocolTCP}, "the ingress proxy"}, {Port{53, v1.ProtocolUDP}, "cluster DNS"}}
	res := Allocate(Input{Nodes: nodes, NodePorts: daemons, Services: []Service{
		svc("web", 5, []int32{8080}),
		svc("web2", 4, []int32{8080}),
		svc("tls", 3, []int32{8443}),
		svc("http", 2, []int32{80}),
		svc("dns", 2, nil, udp(53)),
		svc("asks", 1, []int32{9000}, asks("172.30.0.200")),
	}})
	for name, want := range map[string]string{
		"web":  "172.30.0.11, 172.30.0.12", // n3 is not Ready
		"web2": "!PortsTaken: 8080/TCP on n1 by Service ns/web",
		"tls":  "172.30.0.11",
		"http": "!PortsTaken: 80/TCP on n1 by the ingress proxy",
		"dns":  "!PortsTaken: 53/UDP on n1 by cluster DNS",
		"asks": "!RequestOutsidePools: create a pool holding it",
	} {
		check(t, res.Services[types.NamespacedName{Namespace: "ns", Name: name}], want)
	}
	none := Allocate(Input{Services: []Service{svc("a", 1, []int32{80})}})
	check(t, none.Services[types.NamespacedName{Namespace: "ns", Name: "a"}], "!NoReadyNodes: no Ready node")
}

func TestFromService(t *testing.T) {
	cls := func(c string) *v1.Service {
		s := &v1.Service{Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer}}
		if c != "-" {
			s.Spec.LoadBalancerClass = &c
		}
		return s
	}
	for c, want := range map[string]bool{"-": true, "": true, api.Class: true, "example.com/other": false} {
		if got := Ours(cls(c)); got != want {
			t.Errorf("Ours(class %q) = %v, want %v", c, got, want)
		}
	}
	if Ours(&v1.Service{Spec: v1.ServiceSpec{Type: v1.ServiceTypeNodePort}}) {
		t.Error("a NodePort Service is ours")
	}
	for _, tc := range []struct {
		lbIP, ann, want, wantErr string
	}{
		{"", "", "invalid IP", ""},
		{"192.168.9.1", "", "192.168.9.1", ""},
		{"", "192.168.9.2", "192.168.9.2", ""},
		{"192.168.9.1", "192.168.9.2", "", "disagree"},
		{"", "192.168.9.1,192.168.9.2", "", "has one address"},
		{"nope", "", "", "spec.loadBalancerIP \"nope\" is not an IP address"},
		{"", "fd00::1", "", "annotation lb.skiff.io/ips fd00::1: IPv6"},
	} {
		s := cls("-")
		s.Spec.LoadBalancerIP = tc.lbIP
		if tc.ann != "" {
			s.Annotations = map[string]string{api.IPsAnnotation: tc.ann}
		}
		got := FromService(s)
		if tc.wantErr != "" {
			if got.RequestErr == nil || !strings.Contains(got.RequestErr.Error(), tc.wantErr) {
				t.Errorf("%q/%q: err %v, want %q", tc.lbIP, tc.ann, got.RequestErr, tc.wantErr)
			}
			continue
		}
		if got.RequestErr != nil || got.Requested.String() != tc.want {
			t.Errorf("%q/%q: %v %v, want %s", tc.lbIP, tc.ann, got.Requested, got.RequestErr, tc.want)
		}
	}
}

// TestGateways: Gateways and Services share one allocation, so a pool
// serving both never gives one address to both, and each kind takes only
// from pools that serve it.
func TestGateways(t *testing.T) {
	both := apiPool("both", 10, span("192.168.9.1", "192.168.9.3"))
	both.Spec.Serves = []string{api.ServesServices, api.ServesGateways}
	gwOnly := apiPool("gw", 5, cidr("192.168.8.0/30"))
	gwOnly.Spec.Serves = []string{api.ServesGateways}
	gw := func(name string, age int, opts ...func(*Service)) Service {
		s := svc(name, age, nil, opts...)
		s.Gateway = true
		return s
	}
	name := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: n} }

	res := Allocate(Input{Pools: []Pool{parsed(both)}, Services: []Service{
		svc("s", 3, []int32{80}, holds("192.168.9.1")), gw("g", 2), svc("s2", 1, []int32{80}),
		gw("wants-s", 1, asks("192.168.9.1")),
	}})
	check(t, res.Services[name("s")], "192.168.9.1")
	check(t, res.Gateways[name("g")], "192.168.9.2")
	check(t, res.Services[name("s2")], "192.168.9.3")
	check(t, res.Gateways[name("wants-s")], "!AddressConflict: held by Service ns/s")

	// A Gateways-only pool: Services fall back to node addresses, a
	// Service cannot request its addresses, Gateways keep theirs.
	res = Allocate(Input{Pools: []Pool{parsed(gwOnly)}, Nodes: []Node{{Name: "n1", Addr: netip.MustParseAddr("172.30.0.11"), Ready: true}},
		Services: []Service{gw("keeps", 3, holds("192.168.8.2")), gw("new", 2), gw("full", 1), svc("s", 1, []int32{8080})}})
	check(t, res.Gateways[name("keeps")], "192.168.8.2")
	check(t, res.Gateways[name("new")], "192.168.8.1")
	check(t, res.Gateways[name("full")], "!PoolExhausted: LoadBalancerPool gw has no free address")
	check(t, res.Services[name("s")], "172.30.0.11")
	res = Allocate(Input{Pools: []Pool{parsed(gwOnly), parsed(both)}, Services: []Service{svc("r", 1, []int32{80}, asks("192.168.8.1"))}})
	check(t, res.Services[name("r")], "!RequestOutsidePools: does not serve Services")

	// No pool serves Gateways: they are served on the nodes' addresses,
	// and an annotation left from before is not kept.
	res = Allocate(Input{Services: []Service{gw("g", 1, holds("192.168.9.2"))}})
	check(t, res.Gateways[name("g")], "!NoPool: no enabled, valid LoadBalancerPool serves Gateways")
	res = Allocate(Input{Pools: []Pool{parsed(apiPool("svc", 1, cidr("192.168.7.0/30")))}, Services: []Service{gw("g", 1, asks("192.168.7.1"))}})
	check(t, res.Gateways[name("g")], "!RequestOutsidePools: does not serve Gateways")
}
