package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

const (
	// udpWorkers read and answer UDP queries in parallel; each owns its
	// buffers, so the hot path allocates nothing.
	udpWorkers = 4
	// maxSlow bounds the queries waiting on the slow path (mostly on
	// upstream resolvers) per listener. Past it UDP queries are dropped and
	// the client retries: better than piling up goroutines behind a dead
	// upstream while cluster names still answer at full speed.
	maxSlow = 1024
	// slowTimeout bounds one slow-path answer; a client has given up by then.
	slowTimeout = 5 * time.Second
	// tcpIdle closes a TCP connection without queries (RFC 7766 suggests
	// seconds, not minutes).
	tcpIdle = 10 * time.Second
	// tcpDrain is how long a draining server still waits for a query on a
	// connection it accepted: the client may have sent it already.
	tcpDrain = time.Second
)

// ListenAndServe answers DNS on addr over UDP and TCP until ctx is done.
func (h *Handler) ListenAndServe(ctx context.Context, addr string) error {
	pc, ln, err := Listen(addr)
	if err != nil {
		return err
	}
	return h.Serve(ctx, pc, ln)
}

// Listen opens the UDP and TCP sockets of addr. With port 0 both get the
// same port, so a test can use one address for both.
func Listen(addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns: listen %s: %w", addr, err)
	}
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		tcpAddr := addr
		if port == "0" {
			tcpAddr = pc.LocalAddr().String()
		}
		ln, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		// The free UDP port the kernel chose can be a TCP port in use
		// (an outgoing connection's, say): choose again.
		if port != "0" || attempt == 10 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("dns: listen tcp %s: %w", tcpAddr, err)
		}
	}
}

// Serve answers DNS on pc and ln until ctx is done, then drains and
// closes them. Either may be nil.
//
// Draining answers every query already read: a successor data plane may
// be serving duplicates of the same sockets (agent/dataplane), so a query
// read here and then dropped would be lost, not retried by the kernel.
// Reads stop through a deadline, not a close, so a worker between its read
// and its reply still sends the reply.
func (h *Handler) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		if pc != nil {
			pc.SetReadDeadline(time.Now())
		}
		if ln != nil {
			ln.Close()
		}
	})
	defer stop()
	var wg, slowWG sync.WaitGroup
	errs := make(chan error, udpWorkers+1)
	if pc != nil {
		slow := make(chan struct{}, maxSlow)
		for range udpWorkers {
			wg.Go(func() { errs <- h.serveUDP(ctx, pc, slow, &slowWG) })
		}
	}
	if ln != nil {
		wg.Go(func() { errs <- h.serveTCP(ctx, ln) })
	}
	wg.Wait()
	slowWG.Wait()
	if pc != nil {
		pc.Close()
	}
	close(errs)
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(collect(errs)...)
}

func collect(errs <-chan error) []error {
	var out []error
	for err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// peer is where a UDP query came from. On a *net.UDPConn it is a value
// (ReadFromUDPAddrPort does not allocate, ReadFrom does, once per packet).
type peer struct {
	ap   netip.AddrPort
	addr net.Addr // other PacketConns
}

func (h *Handler) serveUDP(ctx context.Context, pc net.PacketConn, slow chan struct{}, slowWG *sync.WaitGroup) error {
	uc, _ := pc.(*net.UDPConn)
	read := func(b []byte) (n int, p peer, err error) {
		if uc != nil {
			n, p.ap, err = uc.ReadFromUDPAddrPort(b)
			return n, p, err
		}
		n, p.addr, err = pc.ReadFrom(b)
		return n, p, err
	}
	write := func(b []byte, p peer) {
		if p.addr != nil {
			pc.WriteTo(b, p.addr)
			return
		}
		uc.WriteToUDPAddrPort(b, p.ap)
	}
	req := make([]byte, dns.MaxMsgSize)
	out := make([]byte, 0, dns.MaxMsgSize)
	for {
		n, from, err := read(req)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if ctx.Err() != nil {
					return nil // drained
				}
				continue
			}
			return fmt.Errorf("dns: read udp: %w", err)
		}
		if resp, ok := h.Fast(req[:n], out, false); ok {
			if resp != nil {
				write(resp, from)
			}
			continue
		}
		select {
		case slow <- struct{}{}:
		default:
			h.metrics.dropped.Inc()
			continue
		}
		// Forwarding can wait on an upstream: don't hold up this worker.
		// A query read before the drain is still answered after it.
		q := append([]byte(nil), req[:n]...)
		slowWG.Go(func() {
			defer func() { <-slow }()
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slowTimeout)
			defer cancel()
			if resp := h.Slow(cctx, q, make([]byte, 0, dns.MaxMsgSize), false); resp != nil {
				write(resp, from)
			}
		})
	}
}

func (h *Handler) serveTCP(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dns: accept tcp: %w", err)
		}
		wg.Go(func() { h.serveConn(ctx, c) })
	}
}

// serveConn answers length-prefixed queries on one TCP connection, in
// order, until the client goes idle (RFC 7766) or, once ctx is done, until
// it has answered the query in flight or waited tcpDrain for one.
func (h *Handler) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now().Add(tcpDrain)) })
	defer stop()
	answerCtx := context.WithoutCancel(ctx)
	var lenBuf [2]byte
	req := make([]byte, dns.MaxMsgSize)
	out := make([]byte, 2, dns.MaxMsgSize+2)
	for {
		c.SetReadDeadline(time.Now().Add(tcpIdle))
		if ctx.Err() != nil {
			// Set after the drain's deadline: put it back.
			c.SetReadDeadline(time.Now().Add(tcpDrain))
		}
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, req[:n]); err != nil {
			return
		}
		cctx, cancel := context.WithTimeout(answerCtx, slowTimeout)
		// The response is written after a 2-byte length into the same
		// buffer, so a connection sends each answer with one write.
		resp := h.Answer(cctx, req[:n], out[2:2], true)
		cancel()
		if resp == nil {
			return
		}
		msg := out[:2+len(resp)]
		if &resp[0] != &msg[2] {
			copy(msg[2:], resp) // the slow path packed somewhere else
		}
		binary.BigEndian.PutUint16(msg, uint16(len(resp)))
		c.SetWriteDeadline(time.Now().Add(tcpIdle))
		if _, err := c.Write(msg); err != nil || ctx.Err() != nil {
			return
		}
	}
}
