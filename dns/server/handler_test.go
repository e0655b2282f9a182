package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/skiffnet/skiff/dns/dnstest"
	"github.com/skiffnet/skiff/dns/forward"
	"github.com/skiffnet/skiff/dns/records"
)

const ns = "ns1"

// newHandler serves the fixture set, plus extra Services, forwarding to
// upstreams (none: forwarded names get SERVFAIL).
func newHandler(t *testing.T, set dnstest.Set, upstreams ...string) *Handler {
	t.Helper()
	tab, err := records.Build(records.Options{}, set.Services, set.Slices)
	if err != nil {
		t.Fatal(err)
	}
	var fwd Forwarder
	if len(upstreams) > 0 {
		f, err := forward.New(forward.Options{Upstreams: upstreams, Timeout: 500 * time.Millisecond, StaleWait: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		fwd = f
	}
	h, err := NewHandler(tab, fwd, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

type transport int

const (
	udp     transport = iota // no EDNS0: 512 bytes
	udpEDNS                  // EDNS0 advertising 4096 bytes
	tcp
)

// ask sends one question through the handler as bytes and unpacks the
// response, as a client would see it.
func ask(t *testing.T, h *Handler, name string, qtype uint16, tr transport) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if tr == udpEDNS {
		m.SetEdns0(4096, false)
	}
	req, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	resp := h.Answer(context.Background(), req, make([]byte, 0, dns.MaxMsgSize), tr == tcp)
	if resp == nil {
		t.Fatalf("%s %s: dropped", name, dns.TypeToString[qtype])
	}
	r := new(dns.Msg)
	if err := r.Unpack(resp); err != nil {
		t.Fatalf("%s %s: unpack response: %v", name, dns.TypeToString[qtype], err)
	}
	if r.Id != m.Id || !r.Response || len(r.Question) != 1 || r.Question[0].Name != name {
		t.Fatalf("%s: response does not match the query: %v", name, r)
	}
	return r
}

// section renders records as sorted "name TYPE rdata" strings without TTL
// and class, so a case keeps to what matters.
func section(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		f := strings.Fields(rr.String())
		out = append(out, f[0]+" "+strings.Join(f[3:], " "))
	}
	slices.Sort(out)
	return out
}

func svc(name string) string { return name + "." + ns + ".svc.cluster.local." }

func TestClusterAnswers(t *testing.T) {
	h := newHandler(t, dnstest.Fixtures(ns))
	cases := []struct {
		name   string
		qtype  uint16
		answer []string
		extra  []string
	}{
		{svc("web"), dns.TypeA, []string{svc("web") + " A 10.96.1.10"}, nil},
		// The answer echoes the question's case (0x20 randomisation).
		{"wEb.NS1.Svc.Cluster.Local.", dns.TypeA, []string{"wEb.NS1.Svc.Cluster.Local. A 10.96.1.10"}, nil},
		{svc("dual"), dns.TypeAAAA, []string{svc("dual") + " AAAA fd00:96::11"}, nil},
		{"_http._tcp." + svc("web"), dns.TypeSRV,
			[]string{"_http._tcp." + svc("web") + " SRV 0 100 80 " + svc("web")},
			[]string{svc("web") + " A 10.96.1.10"}},
		{"10.1.96.10.in-addr.arpa.", dns.TypePTR, []string{"10.1.96.10.in-addr.arpa. PTR " + svc("web")}, nil},
		{"1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR,
			[]string{"1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa. PTR " + svc("dual")}, nil},
		// Headless: one A per ready endpoint; SRV to endpoint hostnames
		// with their addresses in the additional section.
		{svc("db"), dns.TypeA, []string{svc("db") + " A 10.244.1.5", svc("db") + " A 10.244.2.6"}, nil},
		{"_pg._tcp." + svc("db"), dns.TypeSRV, []string{
			"_pg._tcp." + svc("db") + " SRV 0 50 5432 10-244-2-6." + svc("db"),
			"_pg._tcp." + svc("db") + " SRV 0 50 5432 db-0." + svc("db"),
		}, []string{"10-244-2-6." + svc("db") + " A 10.244.2.6", "db-0." + svc("db") + " A 10.244.1.5"}},
		{"5.1.244.10.in-addr.arpa.", dns.TypePTR, []string{"5.1.244.10.in-addr.arpa. PTR db-0." + svc("db")}, nil},
		// StatefulSet pod: hostname.subdomain.
		{"web-ss-0." + svc("web-ss"), dns.TypeA, []string{"web-ss-0." + svc("web-ss") + " A 10.244.1.20"}, nil},
		{svc("warm"), dns.TypeA, []string{svc("warm") + " A 10.244.1.31"}, nil},
		{"dns-version.cluster.local.", dns.TypeTXT, []string{`dns-version.cluster.local. TXT "1.1.0"`}, nil},
		// a-b-c-d.ns.pod.zone, any namespace, IPv4 and IPv6.
		{"10-244-7-9." + ns + ".pod.cluster.local.", dns.TypeA, []string{"10-244-7-9." + ns + ".pod.cluster.local. A 10.244.7.9"}, nil},
		{"fd00--7.other.pod.cluster.local.", dns.TypeAAAA, []string{"fd00--7.other.pod.cluster.local. AAAA fd00::7"}, nil},
		{svc("ext"), dns.TypeCNAME, []string{svc("ext") + " CNAME ext.example.com."}, nil},
		{"cluster.local.", dns.TypeSOA, []string{"cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name+"/"+dns.TypeToString[c.qtype], func(t *testing.T) {
			r := ask(t, h, c.name, c.qtype, udpEDNS)
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || !r.RecursionAvailable {
				t.Errorf("rcode %s aa %v ra %v, want NOERROR, authoritative, recursion available",
					dns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable)
			}
			if got := section(r.Answer); !slices.Equal(got, c.answer) {
				t.Errorf("answer %q, want %q", got, c.answer)
			}
			if got := section(r.Extra); !slices.Equal(got, c.extra) {
				t.Errorf("additional %q, want %q", got, c.extra)
			}
			for _, rr := range r.Answer {
				if rr.Header().Ttl != records.DefaultTTL {
					t.Errorf("TTL %d, want %d", rr.Header().Ttl, records.DefaultTTL)
				}
			}
		})
	}
}

// A negative answer says whether the name exists (NXDOMAIN) or only lacks
// the type (NODATA), and carries the zone's SOA so resolvers can cache it.
func TestNegativeAnswers(t *testing.T) {
	h := newHandler(t, dnstest.Fixtures(ns))
	cases := []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{svc("nope"), dns.TypeA, dns.RcodeNameError},
		{svc("empty"), dns.TypeA, dns.RcodeNameError},              // headless, no ready endpoint
		{"10-244-3-7." + svc("db"), dns.TypeA, dns.RcodeNameError}, // not ready
		{"x." + svc("web"), dns.TypeA, dns.RcodeNameError},
		{"_http._udp." + svc("web"), dns.TypeSRV, dns.RcodeNameError},
		{"not-an-ip." + ns + ".pod.cluster.local.", dns.TypeA, dns.RcodeNameError},
		{"nope.cluster.local.", dns.TypeA, dns.RcodeNameError},
		{svc("web"), dns.TypeAAAA, dns.RcodeSuccess},
		{svc("web"), dns.TypeTXT, dns.RcodeSuccess},
		{ns + ".svc.cluster.local.", dns.TypeA, dns.RcodeSuccess}, // empty non-terminal
		{"svc.cluster.local.", dns.TypeA, dns.RcodeSuccess},
		{"_tcp." + svc("web"), dns.TypeSRV, dns.RcodeSuccess},
		{"10-244-7-9." + ns + ".pod.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess},
		{"dns-version.cluster.local.", dns.TypeA, dns.RcodeSuccess},
	}
	for _, c := range cases {
		r := ask(t, h, c.name, c.qtype, udp)
		what := c.name + " " + dns.TypeToString[c.qtype]
		if r.Rcode != c.rcode {
			t.Errorf("%s: rcode %s, want %s", what, dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
		}
		if len(r.Answer) != 0 || !r.Authoritative {
			t.Errorf("%s: answer %v aa %v, want none, authoritative", what, r.Answer, r.Authoritative)
		}
		if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA || r.Ns[0].Header().Name != "cluster.local." {
			t.Errorf("%s: authority %v, want the cluster.local. SOA", what, r.Ns)
		}
	}
}

func TestExternalName(t *testing.T) {
	up := dnstest.StartUpstream(t, "ext.example.com. 300 IN A 192.0.2.7")
	set := dnstest.Fixtures(ns)
	set.Services = append(set.Services,
		dnstest.ExternalName(ns, "inside", svc("web")),
		dnstest.ExternalName(ns, "loop-a", svc("loop-b")),
		dnstest.ExternalName(ns, "loop-b", svc("loop-a")),
	)
	h := newHandler(t, set, up.Addr)
	cases := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
	}{
		// Chased upstream: CNAME, then the target's A.
		{svc("ext"), dns.TypeA, dns.RcodeSuccess, []string{svc("ext") + " CNAME ext.example.com.", "ext.example.com. A 192.0.2.7"}},
		{"EXT." + ns + ".svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"EXT." + ns + ".svc.cluster.local. CNAME ext.example.com.", "ext.example.com. A 192.0.2.7"}},
		// Chased inside the cluster.
		{svc("inside"), dns.TypeA, dns.RcodeSuccess, []string{svc("inside") + " CNAME " + svc("web"), svc("web") + " A 10.96.1.10"}},
		{svc("inside"), dns.TypeAAAA, dns.RcodeSuccess, []string{svc("inside") + " CNAME " + svc("web")}},
		// A loop ends with the chain so far, not a hang.
		{svc("loop-a"), dns.TypeA, dns.RcodeSuccess, nil},
	}
	for _, c := range cases {
		r := ask(t, h, c.name, c.qtype, udp)
		what := c.name + " " + dns.TypeToString[c.qtype]
		if r.Rcode != c.rcode {
			t.Errorf("%s: rcode %s, want %s", what, dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
		}
		if c.answer == nil {
			if len(r.Answer) == 0 || len(r.Answer) > maxChase {
				t.Errorf("%s: %d records, want a bounded CNAME chain", what, len(r.Answer))
			}
			continue
		}
		// The CNAME comes first: stub resolvers read the chain in order.
		if got := inOrder(r.Answer); !slices.Equal(got, c.answer) {
			t.Errorf("%s: answer %q, want %q", what, got, c.answer)
		}
	}
}

func inOrder(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		f := strings.Fields(rr.String())
		out = append(out, f[0]+" "+strings.Join(f[3:], " "))
	}
	return out
}

func TestForwardAndServeStale(t *testing.T) {
	up := dnstest.StartUpstream(t,
		"example.org. 1 IN A 192.0.2.1",
		"example.org. 1 IN TXT \"hello\"",
		"1.2.0.192.in-addr.arpa. 60 IN PTR example.org.",
	)
	h := newHandler(t, dnstest.Fixtures(ns), up.Addr)
	r := ask(t, h, "Example.ORG.", dns.TypeA, udpEDNS)
	if got := section(r.Answer); r.Rcode != dns.RcodeSuccess || r.Authoritative || !slices.Equal(got, []string{"Example.ORG. A 192.0.2.1"}) {
		t.Fatalf("forwarded: rcode %s aa %v answer %q", dns.RcodeToString[r.Rcode], r.Authoritative, got)
	}
	if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != maxUDP {
		t.Errorf("EDNS0 query answered with OPT %v, want ours advertising %d", opt, maxUDP)
	}
	// Reverse names outside the cluster's addresses go upstream too.
	if r := ask(t, h, "1.2.0.192.in-addr.arpa.", dns.TypePTR, udp); len(r.Answer) != 1 {
		t.Errorf("upstream PTR: %v", r)
	}
	if r := ask(t, h, "nope.example.org.", dns.TypeA, udp); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Errorf("upstream NXDOMAIN: rcode %s, authority %v", dns.RcodeToString[r.Rcode], r.Ns)
	}
	before := up.Queries.Load()
	ask(t, h, "example.org.", dns.TypeA, udp)
	ask(t, h, "nope.example.org.", dns.TypeA, udp)
	if n := up.Queries.Load() - before; n != 0 {
		t.Errorf("upstream asked %d more times for cached answers", n)
	}
	// The upstream dies and the 1 s TTL runs out: the stale answer is
	// still served, with a short TTL.
	up.Stop()
	time.Sleep(1100 * time.Millisecond)
	r = ask(t, h, "example.ORG.", dns.TypeA, udp)
	if got := section(r.Answer); r.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{"example.ORG. A 192.0.2.1"}) {
		t.Fatalf("with the upstream down: rcode %s answer %q, want the stale record", dns.RcodeToString[r.Rcode], got)
	}
	if ttl := r.Answer[0].Header().Ttl; ttl == 0 || ttl > 30 {
		t.Errorf("stale TTL %d, want 1..30", ttl)
	}
	// Never cached: nothing to fall back on.
	if r := ask(t, h, "other.example.org.", dns.TypeA, udp); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("uncached name with the upstream down: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestNoForwarder(t *testing.T) {
	h := newHandler(t, dnstest.Fixtures(ns))
	if r := ask(t, h, "example.org.", dns.TypeA, udp); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

// bigHeadless is a headless Service with n ready endpoints: its A answer
// does not fit in 512 bytes.
func bigHeadless(n int) dnstest.Set {
	set := dnstest.Fixtures(ns)
	var eps []dnstest.Endpoint
	for i := range n {
		eps = append(eps, dnstest.Endpoint{IP: fmt.Sprintf("10.244.9.%d", i+1)})
	}
	set.Services = append(set.Services, dnstest.Service(ns, "big", "None", dnstest.Port{Name: "http", Port: 80}))
	set.Slices = append(set.Slices, dnstest.Slice(ns, "big", "big-1", []dnstest.Port{{Name: "http", Port: 80}}, eps...))
	return set
}

func TestTruncation(t *testing.T) {
	up := dnstest.StartUpstream(t, func() []string {
		var rrs []string
		for i := range 100 {
			rrs = append(rrs, fmt.Sprintf("many.example.org. 60 IN A 192.0.2.%d", i+1))
		}
		return rrs
	}()...)
	h := newHandler(t, bigHeadless(100), up.Addr)
	for _, name := range []string{svc("big"), "many.example.org."} {
		// 100 A records: about 1.6 kB with the question pointer, over
		// both 512 and our 1232-byte EDNS0 limit.
		for _, tr := range []transport{udp, udpEDNS} {
			r := ask(t, h, name, dns.TypeA, tr)
			if !r.Truncated {
				t.Errorf("%s over UDP (edns %v): %d records, not truncated", name, tr == udpEDNS, len(r.Answer))
			}
		}
		r := ask(t, h, name, dns.TypeA, tcp)
		if r.Truncated || len(r.Answer) != 100 {
			t.Errorf("%s over TCP: truncated %v, %d records, want all 100", name, r.Truncated, len(r.Answer))
		}
	}
	// Small answers are not truncated.
	if r := ask(t, h, svc("web"), dns.TypeA, udp); r.Truncated || len(r.Answer) != 1 {
		t.Errorf("small answer: %v", r)
	}
}

// raw sends m's bytes as they are and returns the unpacked response, or nil
// when the handler dropped the packet.
func raw(t *testing.T, h *Handler, req []byte) *dns.Msg {
	t.Helper()
	resp := h.Answer(context.Background(), req, make([]byte, 0, dns.MaxMsgSize), false)
	if resp == nil {
		return nil
	}
	r := new(dns.Msg)
	if err := r.Unpack(resp); err != nil {
		t.Fatalf("unpack response: %v", err)
	}
	return r
}

func pack(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnusualQueries(t *testing.T) {
	h := newHandler(t, dnstest.Fixtures(ns))
	q := func(name string, qtype uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		return m
	}

	m := q(svc("web"), dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	if r := raw(t, h, pack(t, m)); r == nil || r.Rcode != dns.RcodeBadVers || r.IsEdns0() == nil {
		t.Errorf("EDNS version 1: %v, want BADVERS with an OPT", r)
	}

	m = q(svc("web"), dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	if r := raw(t, h, pack(t, m)); r == nil || r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %v, want FORMERR", r)
	}

	m = q(svc("web"), dns.TypeA)
	m.Opcode = dns.OpcodeUpdate
	if r := raw(t, h, pack(t, m)); r == nil || r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("UPDATE: %v, want NOTIMP", r)
	}

	m = q(svc("web"), dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	if r := raw(t, h, pack(t, m)); r == nil || r.Rcode != dns.RcodeRefused {
		t.Errorf("class CH: %v, want REFUSED", r)
	}

	if r := raw(t, h, pack(t, q("cluster.local.", dns.TypeAXFR))); r == nil || r.Rcode != dns.RcodeRefused {
		t.Errorf("AXFR: %v, want REFUSED", r)
	}

	m = q(svc("web"), dns.TypeA)
	m.Response = true
	if r := raw(t, h, pack(t, m)); r != nil {
		t.Errorf("a response sent to us was answered: %v", r)
	}
	for _, junk := range [][]byte{nil, {1, 2, 3}, pack(t, q(svc("web"), dns.TypeA))[:20]} {
		if r := raw(t, h, junk); r != nil {
			t.Errorf("malformed %x answered: %v", junk, r)
		}
	}

	// A question name whose suffix is a compression pointer (here to
	// bytes after the question): the hot path declines it, the slow path
	// answers it.
	b := pack(t, q(svc("web"), dns.TypeA))
	ptrq := append([]byte(nil), b[:12]...)
	ptrq = append(ptrq, 3, 'w', 'e', 'b', 0xC0, 12+4+2+4) // "web" + pointer to "ns1.svc.cluster.local." below
	ptrq = append(ptrq, 0, 1, 0, 1)                       // A IN
	r := raw(t, h, append(ptrq, b[12+4:len(b)-4]...))
	if r == nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.96.1.10" {
		t.Errorf("compressed question: %v", r)
	}

	// RD is echoed, CD too; the response is always RA.
	m = q(svc("web"), dns.TypeA)
	m.RecursionDesired = false
	m.CheckingDisabled = true
	if r := raw(t, h, pack(t, m)); r == nil || r.RecursionDesired || !r.CheckingDisabled || !r.RecursionAvailable {
		t.Errorf("flags: %v", r)
	}
}

func TestUpdateSwapsAnswers(t *testing.T) {
	set := dnstest.Fixtures(ns)
	h := newHandler(t, set)
	set.Services[0].Spec.ClusterIP = "10.96.1.99"
	set.Services[0].Spec.ClusterIPs = []string{"10.96.1.99"}
	tab, err := records.Build(records.Options{Serial: 2}, set.Services, set.Slices)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Update(tab); err != nil {
		t.Fatal(err)
	}
	if got := section(ask(t, h, svc("web"), dns.TypeA, udp).Answer); !slices.Equal(got, []string{svc("web") + " A 10.96.1.99"}) {
		t.Errorf("after Update: %q", got)
	}
	if h.Table() != tab {
		t.Error("Table does not return the table served")
	}
}

func TestFastPathDoesNotAllocate(t *testing.T) {
	h := newHandler(t, dnstest.Many(ns, 1000))
	out := make([]byte, 0, dns.MaxMsgSize)
	for _, name := range []string{"svc-500." + ns + ".svc.cluster.local.", "nope.cluster.local.", "_http._tcp.svc-7." + ns + ".svc.cluster.local.",
		// IPv6 pod names (rare, deprecated) allocate once, in netip.ParseAddr.
		"10-244-1-5." + ns + ".pod.cluster.local."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.SetEdns0(1232, false)
		req := pack(t, m)
		if _, ok := h.Fast(req, out, false); !ok {
			t.Fatalf("%s: not answered by the fast path", name)
		}
		if n := testing.AllocsPerRun(200, func() { h.Fast(req, out, false) }); n != 0 {
			t.Errorf("%s: %v allocations per query, want 0", name, n)
		}
	}
}

func TestQueryMetrics(t *testing.T) {
	tab, err := records.Build(records.Options{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h, err := NewHandler(tab, nil, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ask(t, h, "dns-version.cluster.local.", dns.TypeTXT, udp)
	ask(t, h, "nope.cluster.local.", dns.TypeA, udp)
	ask(t, h, "nope.cluster.local.", dns.TypeA, udp)
	ask(t, h, "example.org.", dns.TypeMX, udp)
	raw(t, h, []byte{1, 2, 3})
	want := `
# HELP skiff_dns_dropped_total DNS packets dropped unanswered: malformed, responses, or over the slow-path concurrency limit.
# TYPE skiff_dns_dropped_total counter
skiff_dns_dropped_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "skiff_dns_dropped_total"); err != nil {
		t.Error(err)
	}
	vec := map[[2]string]float64{{"TXT", "NOERROR"}: 1, {"A", "NXDOMAIN"}: 2, {"MX", "SERVFAIL"}: 1, {"A", "NOERROR"}: 0}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[[2]string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "skiff_dns_queries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var k [2]string
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" {
					k[0] = l.GetValue()
				} else {
					k[1] = l.GetValue()
				}
			}
			got[k] = m.GetCounter().GetValue()
		}
	}
	for k, v := range vec {
		if got[k] != v {
			t.Errorf("skiff_dns_queries_total{type=%q,rcode=%q} = %v, want %v", k[0], k[1], got[k], v)
		}
	}
}

// newHandlerFrom serves set without forwarding, for benchmarks.
func newHandlerFrom(set dnstest.Set) (*Handler, error) {
	tab, err := records.Build(records.Options{}, set.Services, set.Slices)
	if err != nil {
		return nil, err
	}
	return NewHandler(tab, nil, nil, nil)
}

// dnstestUpstream is a loopback resolver that knows example.org.
func dnstestUpstream(t *testing.T) string {
	return dnstest.StartUpstream(t, "example.org. 60 IN A 192.0.2.1").Addr
}
