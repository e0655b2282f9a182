package server

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/skiffnet/skiff/dns/dnstest"
)

// BenchmarkFast is the hot path alone: parse, look up, copy, on a table of
// 5,000 Services.
func BenchmarkFast(b *testing.B) {
	h, err := benchHandler(b)
	if err != nil {
		b.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion("svc-4321.bench.svc.cluster.local.", dns.TypeA)
	m.SetEdns0(1232, false)
	req, _ := m.Pack()
	out := make([]byte, 0, dns.MaxMsgSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := h.Fast(req, out, false); !ok {
			b.Fatal("not answered on the fast path")
		}
	}
}

// BenchmarkUDP is a query and its answer through loopback sockets, one at a
// time: mostly the kernel, which is the point of a zero-copy hot path.
func BenchmarkUDP(b *testing.B) {
	h, err := benchHandler(b)
	if err != nil {
		b.Fatal(err)
	}
	pc, ln, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Serve(ctx, pc, ln)
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	m := new(dns.Msg)
	m.SetQuestion("svc-4321.bench.svc.cluster.local.", dns.TypeA)
	req, _ := m.Pack()
	buf := make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		c.Write(req)
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func benchHandler(b *testing.B) (*Handler, error) {
	set := dnstest.Many("bench", 5000)
	return newHandlerFrom(set)
}
