package records_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/skiffnet/skiff/dns/dnstest"
	"github.com/skiffnet/skiff/dns/records"
)

func build(t *testing.T, set dnstest.Set) *records.Table {
	t.Helper()
	tab, err := records.Build(records.Options{}, set.Services, set.Slices)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// rdata renders the records of one type at name as sorted "TYPE data" strings.
func rdata(tab *records.Table, name string, qtype uint16) []string {
	var out []string
	for _, rr := range tab.Lookup(name).Of(qtype) {
		f := strings.Fields(rr.String())
		out = append(out, strings.Join(f[3:], " "))
	}
	slices.Sort(out)
	return out
}

func TestSpecRecords(t *testing.T) {
	tab := build(t, dnstest.Fixtures("ns1"))
	cases := []struct {
		name  string
		qtype uint16
		want  []string
	}{
		// 2.2 schema version
		{"dns-version.cluster.local.", dns.TypeTXT, []string{`TXT "` + records.SchemaVersion + `"`}},
		// 2.3 ClusterIP: A, SRV for named ports only, PTR
		{"web.ns1.svc.cluster.local.", dns.TypeA, []string{"A 10.96.1.10"}},
		{"_http._tcp.web.ns1.svc.cluster.local.", dns.TypeSRV, []string{"SRV 0 100 80 web.ns1.svc.cluster.local."}},
		{"10.1.96.10.in-addr.arpa.", dns.TypePTR, []string{"PTR web.ns1.svc.cluster.local."}},
		{"dual.ns1.svc.cluster.local.", dns.TypeAAAA, []string{"AAAA fd00:96::11"}},
		{"dual.ns1.svc.cluster.local.", dns.TypeA, []string{"A 10.96.1.11"}},
		// 2.4 headless: ready endpoints only, hostnames, SRV to hostnames with endpoint ports
		{"db.ns1.svc.cluster.local.", dns.TypeA, []string{"A 10.244.1.5", "A 10.244.2.6"}},
		{"db-0.db.ns1.svc.cluster.local.", dns.TypeA, []string{"A 10.244.1.5"}},
		{"10-244-2-6.db.ns1.svc.cluster.local.", dns.TypeA, []string{"A 10.244.2.6"}},
		{"_pg._tcp.db.ns1.svc.cluster.local.", dns.TypeSRV, []string{
			"SRV 0 50 5432 10-244-2-6.db.ns1.svc.cluster.local.",
			"SRV 0 50 5432 db-0.db.ns1.svc.cluster.local.",
		}},
		{"5.1.244.10.in-addr.arpa.", dns.TypePTR, []string{"PTR db-0.db.ns1.svc.cluster.local."}},
		// StatefulSet pods through their governing Service
		{"web-ss-1.web-ss.ns1.svc.cluster.local.", dns.TypeA, []string{"A 10.244.2.21"}},
		{"_http._tcp.web-ss.ns1.svc.cluster.local.", dns.TypeSRV, []string{
			"SRV 0 50 8080 web-ss-0.web-ss.ns1.svc.cluster.local.",
			"SRV 0 50 8080 web-ss-1.web-ss.ns1.svc.cluster.local.",
		}},
		// publishNotReadyAddresses
		{"warm.ns1.svc.cluster.local.", dns.TypeA, []string{"A 10.244.1.31"}},
		// 2.5 ExternalName
		{"ext.ns1.svc.cluster.local.", dns.TypeCNAME, []string{"CNAME ext.example.com."}},
	}
	for _, c := range cases {
		got := rdata(tab, c.name, c.qtype)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s %s: got %q, want %q", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
	}
	if !tab.Lookup("ext.ns1.svc.cluster.local.").Alias {
		t.Error("ExternalName Service is not marked as an alias to chase")
	}
}

func TestNamesThatMustNotExist(t *testing.T) {
	tab := build(t, dnstest.Fixtures("ns1"))
	for _, name := range []string{
		"empty.ns1.svc.cluster.local.",               // headless without ready endpoints
		"10-244-3-7.db.ns1.svc.cluster.local.",       // not-ready endpoint
		"7.3.244.10.in-addr.arpa.",                   // its PTR
		"_8080._tcp.web.ns1.svc.cluster.local.",      // unnamed port
		"_http._udp.web.ns1.svc.cluster.local.",      // wrong protocol
		"nope.ns1.svc.cluster.local.",                // no such Service
		"web.ns2.svc.cluster.local.",                 // other namespace
		"_http._tcp.ext.ns1.svc.cluster.local.",      // ExternalName has no SRV
		"x.web.ns1.svc.cluster.local.",               // below a ClusterIP Service
		"db-0.db.ns1.svc.cluster.local.example.com.", // not ours
	} {
		if n := tab.Lookup(name); n != nil {
			t.Errorf("%s exists with %v, want NXDOMAIN", name, n.RRs)
		}
	}
}

func TestEmptyNonTerminals(t *testing.T) {
	tab := build(t, dnstest.Fixtures("ns1"))
	for _, name := range []string{
		"cluster.local.", "svc.cluster.local.", "pod.cluster.local.", "ns1.svc.cluster.local.",
		"_tcp.web.ns1.svc.cluster.local.",
	} {
		n := tab.Lookup(name)
		if n == nil {
			t.Errorf("%s: NXDOMAIN, want an existing name (NODATA)", name)
			continue
		}
		if a := n.Of(dns.TypeA); len(a) != 0 {
			t.Errorf("%s has A records %v", name, a)
		}
	}
	if soa := tab.Lookup("cluster.local.").Of(dns.TypeSOA); len(soa) != 1 {
		t.Errorf("zone apex SOA: got %v", soa)
	}
}

func TestCustomZoneAndTTL(t *testing.T) {
	set := dnstest.Fixtures("ns1")
	tab, err := records.Build(records.Options{Zone: "Example.Internal", TTL: 5}, set.Services, set.Slices)
	if err != nil {
		t.Fatal(err)
	}
	rrs := tab.Lookup("web.ns1.svc.example.internal.").Of(dns.TypeA)
	if len(rrs) != 1 || rrs[0].Header().Ttl != 5 {
		t.Fatalf("got %v, want one A with TTL 5", rrs)
	}
	if tab.SOA.Minttl != 5 {
		t.Errorf("SOA minimum %d, want the TTL 5 so negative answers expire with positive ones", tab.SOA.Minttl)
	}
}

func TestBadInput(t *testing.T) {
	if _, err := records.Build(records.Options{Zone: "bad..zone"}, nil, nil); err == nil || !strings.Contains(err.Error(), "zone") {
		t.Errorf("bad zone: got %v, want an error naming the zone", err)
	}
	set := dnstest.Set{Services: dnstest.Fixtures("ns1").Services}
	set.Services = append(set.Services,
		dnstest.ExternalName("ns1", "toip", "10.0.0.1"),
		dnstest.ExternalName("ns1", "junk", "not a name"),
		dnstest.Service("ns1", "badip", "10.96.999.1"),
	)
	tab := build(t, set)
	for _, name := range []string{"toip.ns1.svc.cluster.local.", "junk.ns1.svc.cluster.local.", "badip.ns1.svc.cluster.local."} {
		if n := tab.Lookup(name); n != nil {
			t.Errorf("%s: got %v, want the bad object skipped", name, n.RRs)
		}
	}
}

func TestDuplicateEndpointsAcrossSlices(t *testing.T) {
	set := dnstest.Fixtures("ns1")
	// During a rebalance the same endpoint sits in two slices.
	set.Slices = append(set.Slices, dnstest.Slice("ns1", "db", "db-2", []dnstest.Port{{Name: "pg", Port: 5432}},
		dnstest.Endpoint{IP: "10.244.1.5", Hostname: "db-0"}))
	tab := build(t, set)
	if got := rdata(tab, "db-0.db.ns1.svc.cluster.local.", dns.TypeA); len(got) != 1 {
		t.Errorf("got %q, want one A record", got)
	}
}

func TestPodIP(t *testing.T) {
	for label, want := range map[string]string{
		"10-244-1-5":  "10.244.1.5",
		"0-0-0-0":     "0.0.0.0",
		"fd00--1":     "fd00::1",
		"10-244-1":    "",
		"10-244-1-5-": "",
		"256-0-0-1":   "",
		"1-2-3-4-5":   "",
		"a-b-c-d":     "",
		"1--2-3":      "1::2:3",
		"fd00-:-1":    "",
		"":            "",
	} {
		ip, ok := records.PodIP([]byte(label))
		got := ""
		if ok {
			got = ip.String()
		}
		if got != want {
			t.Errorf("PodIP(%q) = %q, want %q", label, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { records.PodIP([]byte("10-244-1-5")) }); n != 0 {
		t.Errorf("PodIP allocates %v times per IPv4 label; it runs on the query hot path", n)
	}
}
