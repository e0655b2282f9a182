package server

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A data plane hands its DNS sockets to its successor and then drains
// (agent/dataplane): for a moment both serve the same sockets, then the old
// one stops. No query that either of them read may go unanswered, over UDP
// or TCP, however the stop falls between a read and its reply.
func TestHandoverLosesNoQuery(t *testing.T) {
	h := newHandler(t, bigHeadless(3), dnstestUpstream(t))
	pc, ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	// The first server owns the originals; each successor gets duplicates,
	// as handoff passes them over a unix socket.
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, pc, ln) }()

	var sent, failed atomic.Int64
	quit := make(chan struct{})
	var clients sync.WaitGroup
	for i := range 16 {
		network := "udp"
		if i%4 == 0 {
			network = "tcp"
		}
		clients.Go(func() {
			c := &dns.Client{Net: network, Timeout: 2 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion(svc("web"), dns.TypeA)
			for {
				select {
				case <-quit:
					return
				default:
				}
				sent.Add(1)
				if r, _, err := c.Exchange(m, addr); err != nil || len(r.Answer) != 1 {
					failed.Add(1)
					t.Logf("%s query: %v %v", network, r, err)
				}
			}
		})
	}
	for range 30 {
		time.Sleep(20 * time.Millisecond)
		pc2, ln2 := dupSockets(t, pc, ln)
		ctx, stop2 := context.WithCancel(context.Background())
		done2 := make(chan error, 1)
		go func() { done2 <- h.Serve(ctx, pc2, ln2) }()
		time.Sleep(5 * time.Millisecond)
		stop()
		if err := <-done; err != nil {
			t.Errorf("draining server: %v", err)
		}
		pc, ln, stop, done = pc2, ln2, stop2, done2
	}
	close(quit)
	clients.Wait()
	stop()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if sent.Load() == 0 || failed.Load() > 0 {
		t.Errorf("%d of %d queries failed across 30 handovers; want none", failed.Load(), sent.Load())
	}
}

func dupSockets(t *testing.T, pc net.PacketConn, ln net.Listener) (net.PacketConn, net.Listener) {
	t.Helper()
	uf, err := pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer uf.Close()
	tf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	pc2, err := net.FilePacketConn(uf)
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.FileListener(tf)
	if err != nil {
		t.Fatal(err)
	}
	return pc2, ln2
}
