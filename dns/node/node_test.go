package node_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiffnet/skiff/dns/dnstest"
	"github.com/skiffnet/skiff/dns/node"
)

const ns = "ns1"

// fixtureClient is a fake API server holding the fixture set.
func fixtureClient() *fake.Clientset {
	set := dnstest.Fixtures(ns)
	var objs []runtime.Object
	for _, s := range set.Services {
		objs = append(objs, s)
	}
	for _, s := range set.Slices {
		objs = append(objs, s)
	}
	return fake.NewClientset(objs...)
}

// run starts s for the test, waits until it is ready and stops it (and
// checks it stopped cleanly) at the end.
func run(t *testing.T, s *node.Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not ready after 5 s")
	}
}

func TestNewChecksOptions(t *testing.T) {
	client := fixtureClient()
	for _, o := range []node.Options{
		{Listen: []string{"127.0.0.1:0"}},
		{Client: client},
		{Client: client, Listen: []string{"localhost:53"}},
		{Client: client, Listen: []string{"127.0.0.1"}},
		{Client: client, Listen: []string{"127.0.0.1:0"}, Zone: "bad..zone"},
	} {
		if _, err := node.New(o); err == nil {
			t.Errorf("New(%+v): no error", o)
		}
	}
}

func TestRun(t *testing.T) {
	up := dnstest.StartUpstream(t, "example.org. 60 IN A 192.0.2.1")
	reg := prometheus.NewRegistry()
	s, err := node.New(node.Options{
		Client:     fixtureClient(),
		Listen:     []string{"127.0.0.1:0", "[::1]:0"},
		Upstreams:  []string{up.Addr},
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	addrs := s.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("Addrs %q, want two", addrs)
	}
	for _, addr := range addrs {
		for _, network := range []string{"udp", "tcp"} {
			for name, want := range map[string]string{
				"web." + ns + ".svc.cluster.local.": "10.96.1.10",
				"example.org.":                      "192.0.2.1",
			} {
				m := new(dns.Msg)
				m.SetQuestion(name, dns.TypeA)
				c := &dns.Client{Net: network, Timeout: 2 * time.Second}
				r, _, err := c.Exchange(m, addr)
				if err != nil {
					t.Fatalf("%s %s %s: %v", network, addr, name, err)
				}
				if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != want {
					t.Errorf("%s %s %s: %v, want %s", network, addr, name, r.Answer, want)
				}
			}
		}
	}
	for _, name := range []string{"skiff_dns_queries_total", "skiff_dns_cache_total", "skiff_dns_upstream_duration_seconds", "skiff_dns_names"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Errorf("metric %s: %d series, %v", name, n, err)
		}
	}
	if got := gauge(t, reg, "skiff_dns_names"); got < 20 {
		t.Errorf("skiff_dns_names = %v, want the fixture table's names", got)
	}
}

// gauge reads the value of an unlabelled gauge from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// An upstream that is one of our own addresses would make every unknown
// name loop until it times out; it is dropped.
func TestNoForwardingToOurselves(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := pc.LocalAddr().String()
	pc.Close()
	conf := t.TempDir() + "/resolv.conf"
	s, err := node.New(node.Options{
		Client:     fixtureClient(),
		Listen:     []string{self},
		Upstreams:  []string{self},
		ResolvConf: conf, // unused: Upstreams win
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA)
	start := time.Now()
	r, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, self)
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("got %v, %v; want SERVFAIL at once", r, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("SERVFAIL took %v", d)
	}
}

func TestBusyAddressFailsRun(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s, err := node.New(node.Options{Client: fixtureClient(), Listen: []string{pc.LocalAddr().String()}, Upstreams: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), pc.LocalAddr().String()) {
		t.Errorf("Run on a taken address: %v, want an error naming it", err)
	}
}
