package forward

import (
	"context"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// upstream is a real DNS server on loopback answering example.org with
// 192.0.2.1 (TTL 60) and NXDOMAIN for everything else.
func upstream(t *testing.T) (addr string, queries *atomic.Int32, stop func()) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	queries = new(atomic.Int32)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "example.org." {
			rr, _ := dns.NewRR("example.org. 60 IN A 192.0.2.1")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR("org. 600 IN SOA a. b. 1 2 3 4 20")
			m.Ns = append(m.Ns, soa)
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	var once atomic.Bool
	stop = func() {
		if once.CompareAndSwap(false, true) {
			srv.Shutdown()
		}
	}
	t.Cleanup(stop)
	return pc.LocalAddr().String(), queries, stop
}

func query(name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	return m
}

func TestCacheAndStale(t *testing.T) {
	addr, queries, stop := upstream(t)
	f, err := New(Options{Upstreams: []string{addr}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f.now = func() time.Time { return now }
	ctx := context.Background()
	for range 3 {
		r, err := f.Exchange(ctx, query("example.org."))
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("answer %v, err %v", r, err)
		}
	}
	if n := queries.Load(); n != 1 {
		t.Errorf("upstream asked %d times for a cached name, want 1", n)
	}
	now = now.Add(20 * time.Second)
	r, _ := f.Exchange(ctx, query("EXAMPLE.org."))
	if ttl := r.Answer[0].Header().Ttl; ttl != 40 {
		t.Errorf("TTL after 20 s in cache = %d, want 40", ttl)
	}
	// Negative answers are cached for the SOA minimum (20 s).
	f.Exchange(ctx, query("nope.org."))
	f.Exchange(ctx, query("nope.org."))
	if n := queries.Load(); n != 2 {
		t.Errorf("upstream asked %d times, want 2 (negative answer cached)", n)
	}
	// Expired, and the upstream is gone: the stale answer is served.
	stop()
	now = now.Add(2 * time.Minute)
	r, err = f.Exchange(ctx, query("example.org."))
	if err != nil || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 {
		t.Fatalf("stale answer with the upstream down: %v, %v", r, err)
	}
	if _, err := f.Exchange(ctx, query("never-seen.org.")); err == nil {
		t.Error("uncached name with the upstream down: want an error")
	}
}

// blackhole is a UDP socket that reads queries and never answers: an
// upstream that is unreachable rather than refusing.
func blackhole(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestStaleAnswerDoesNotWaitForADeadUpstream(t *testing.T) {
	good, _, stop := upstream(t)
	hole := blackhole(t)
	f, err := New(Options{Upstreams: []string{good}, Timeout: 3 * time.Second, StaleWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f.now = func() time.Time { return now }
	if _, err := f.Exchange(context.Background(), query("example.org.")); err != nil {
		t.Fatal(err)
	}
	// The upstream now drops everything; the cached answer has expired.
	stop()
	f.o.Upstreams = []string{hole}
	now = now.Add(90 * time.Second)
	start := time.Now()
	r, err := f.Exchange(context.Background(), query("example.org."))
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
		t.Fatalf("stale answer: %v, %v", r, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("stale answer took %v, want about StaleWait (200ms), not the 3 s upstream timeout", d)
	}
	if got := testutil.ToFloat64(f.metrics.stale); got != 1 {
		t.Errorf("stale counter %v, want 1", got)
	}
}

func TestServfailUpstreamFallsThrough(t *testing.T) {
	bad, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: bad, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	good, _, _ := upstream(t)
	reg := prometheus.NewRegistry()
	f, err := New(Options{Upstreams: []string{bad.LocalAddr().String(), good}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.Exchange(context.Background(), query("example.org."))
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("got %v, %v; want the second upstream's answer", r, err)
	}
	if n := testutil.ToFloat64(f.metrics.upstreamErrors.WithLabelValues(bad.LocalAddr().String())); n != 1 {
		t.Errorf("errors counted for the SERVFAIL upstream: %v, want 1", n)
	}
	if n, err := testutil.GatherAndCount(reg, "skiff_dns_upstream_duration_seconds"); err != nil || n != 1 {
		t.Errorf("upstream latency series: %d, %v; want 1", n, err)
	}
}

func TestFromResolvConf(t *testing.T) {
	path := t.TempDir() + "/resolv.conf"
	if err := os.WriteFile(path, []byte("search example.org\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := FromResolvConf(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.0.2.53:53", "[2001:db8::53]:53"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	os.WriteFile(path, []byte("search example.org\n"), 0o644)
	if _, err := FromResolvConf(path); err == nil {
		t.Error("resolv.conf without nameservers: want an error")
	}
}
