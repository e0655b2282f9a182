package server

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/skiffnet/skiff/dns/dnstest"
)

// serve runs h on a fresh loopback port for the test and returns the
// address, which takes UDP and TCP.
func serve(t *testing.T, h *Handler) string {
	t.Helper()
	pc, ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, pc, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return pc.LocalAddr().String()
}

func TestListenUDPAndTCP(t *testing.T) {
	up := dnstestUpstream(t)
	h := newHandler(t, bigHeadless(100), up)
	addr := serve(t, h)

	m := new(dns.Msg)
	m.SetQuestion(svc("web"), dns.TypeA)
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: 2 * time.Second}
		r, _, err := c.Exchange(m, addr)
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.96.1.10" {
			t.Errorf("%s: %v", network, r)
		}
	}

	// A big answer: truncated over UDP, whole over TCP, as a stub resolver
	// retries it.
	m.SetQuestion(svc("big"), dns.TypeA)
	m.SetEdns0(4096, false)
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated {
		t.Errorf("UDP: %d records, not truncated", len(r.Answer))
	}
	if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != maxUDP {
		t.Errorf("UDP: OPT %v, want our EDNS0 size %d", opt, maxUDP)
	}
	c.Net = "tcp"
	if r, _, err = c.Exchange(m, addr); err != nil || len(r.Answer) != 100 {
		t.Errorf("TCP: %v records, err %v; want 100", r, err)
	}

	// A forwarded name goes through the slow path's goroutines.
	m = new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA)
	c.Net = "udp"
	if r, _, err = c.Exchange(m, addr); err != nil || len(r.Answer) != 1 {
		t.Errorf("forwarded over UDP: %v, %v", r, err)
	}
}

// Several queries on one TCP connection, sent before reading any answer
// (RFC 7766 pipelining), are answered in order, forwarded ones included.
func TestTCPPipelining(t *testing.T) {
	h := newHandler(t, bigHeadless(3), dnstestUpstream(t))
	addr := serve(t, h)
	conn, err := dns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	names := []string{svc("web"), "example.org.", svc("nope"), svc("big")}
	for i, name := range names {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.Id = uint16(i + 1)
		if err := conn.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	for i, name := range names {
		r, err := conn.ReadMsg()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if r.Id != uint16(i+1) || r.Question[0].Name != name {
			t.Errorf("answer %d is for %d %s, want %s", i, r.Id, r.Question[0].Name, name)
		}
	}
}

func TestListenBusyPort(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, _, err := Listen(pc.LocalAddr().String()); err == nil {
		t.Error("Listen on a taken port: no error")
	}
}

// Answering a cluster name over UDP allocates nothing, socket loop included:
// at a hundred thousand queries a second garbage is CPU time.
func TestUDPLoopDoesNotAllocate(t *testing.T) {
	h := newHandler(t, dnstestFixtures())
	addr := serve(t, h)
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion(svc("web"), dns.TypeA)
	req := pack(t, m)
	buf := make([]byte, 512)
	roundTrip := func() {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(buf); err != nil || n < len(req) {
			t.Fatalf("read answer: %d bytes, %v", n, err)
		}
	}
	roundTrip()
	// The client side (a connected socket, a fixed deadline) accounts for
	// what remains; allow it one allocation per round trip (the server made it 2 with ReadFrom).
	if n := testing.AllocsPerRun(500, roundTrip); n > 1 {
		t.Errorf("%v allocations per UDP query and answer, want at most 1", n)
	}
}

func dnstestFixtures() dnstest.Set { return dnstest.Fixtures(ns) }
