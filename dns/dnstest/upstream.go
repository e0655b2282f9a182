package dnstest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// Upstream is a real resolver on loopback (UDP and TCP on one port) that
// answers from a fixed set of records: what the node's resolvers are to
// the forwarder in tests.
type Upstream struct {
	Addr    string       // 127.0.0.1:PORT, UDP and TCP
	Queries atomic.Int32 // questions received

	rrs      map[string][]dns.RR // lowercased "name type" -> records
	udp, tcp *dns.Server
	once     sync.Once
}

// StartUpstream serves records, given in zone-file syntax ("example.org. 60
// IN A 192.0.2.1"), until Stop or the end of the test. Names with no
// records of the asked type but some of another get NODATA; unknown names
// NXDOMAIN; both with an SOA whose minimum is 20 s.
func StartUpstream(t testing.TB, records ...string) *Upstream {
	t.Helper()
	u := &Upstream{rrs: map[string][]dns.RR{}}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("upstream record %q: %v", s, err)
		}
		k := strings.ToLower(rr.Header().Name)
		u.rrs[k] = append(u.rrs[k], rr)
	}
	pc, ln := listenBoth(t)
	u.Addr = pc.LocalAddr().String()
	u.udp = &dns.Server{PacketConn: pc, Handler: u}
	u.tcp = &dns.Server{Listener: ln, Handler: u}
	started := make(chan struct{}, 2)
	u.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	u.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go u.udp.ActivateAndServe()
	go u.tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(u.Stop)
	return u
}

// Stop shuts the upstream down: later queries to Addr are refused by the
// kernel (ICMP port unreachable, TCP RST).
func (u *Upstream) Stop() {
	u.once.Do(func() {
		u.udp.Shutdown()
		u.tcp.Shutdown()
	})
}

// ServeDNS implements dns.Handler.
func (u *Upstream) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	u.Queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	have, ok := u.rrs[strings.ToLower(q.Name)]
	for _, rr := range have {
		if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME {
			rr = dns.Copy(rr)
			rr.Header().Name = q.Name
			m.Answer = append(m.Answer, rr)
		}
	}
	if len(m.Answer) == 0 {
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		soa, _ := dns.NewRR(". 600 IN SOA a.root. b.root. 1 7200 900 86400 20")
		m.Ns = append(m.Ns, soa)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := 512
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// listenBoth opens UDP and TCP on one free loopback port. The port the
// kernel picks for UDP can be taken for TCP (by another test package's
// connection, say): pick again then.
func listenBoth(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		if attempt == 20 {
			t.Fatal(err)
		}
	}
}
