package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// h1Conn is one keep-alive connection to an endpoint, used by one exchange
// at a time.
type h1Conn struct {
	client    *leanClient
	nc        net.Conn
	raw       syscall.RawConn // for the liveness peek; nil if unavailable
	br        *bufio.Reader
	bw        *bufio.Writer
	addr      string
	idleSince time.Time
	reused    bool  // came from the pool: the backend may have closed it
	nread     int64 // bytes read in this exchange; 0 = the backend said nothing
	budget    int64 // bytes the response head may still take; <0 = no limit
}

func newH1Conn(c *leanClient, nc net.Conn, addr string) *h1Conn {
	pc := &h1Conn{client: c, nc: nc, addr: addr, budget: -1}
	if sc, ok := nc.(syscall.Conn); ok {
		pc.raw, _ = sc.SyscallConn()
	}
	pc.br = bufio.NewReader(pc)
	pc.bw = bufio.NewWriter(nc)
	return pc
}

var errHeadTooLarge = errors.New("upstream response headers too large")

// Read feeds the bufio.Reader, counting bytes and enforcing the header
// budget while a response head is being read.
func (pc *h1Conn) Read(p []byte) (int, error) {
	if pc.budget == 0 {
		return 0, errHeadTooLarge
	}
	if pc.budget > 0 && int64(len(p)) > pc.budget {
		p = p[:pc.budget]
	}
	n, err := pc.nc.Read(p)
	pc.nread += int64(n)
	if pc.budget > 0 {
		pc.budget -= int64(n)
	}
	return n, err
}

func (pc *h1Conn) close() { pc.nc.Close() }

// abort unblocks whatever the exchange is waiting for when the request's
// context ends; the connection is not reused afterwards.
func (pc *h1Conn) abort() { pc.nc.SetDeadline(time.Unix(1, 0)) }

// writeError is a failure to send the request head: the backend cannot
// have acted on a request it did not receive in full.
type writeError struct{ err error }

func (e *writeError) Error() string { return "writing request: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// silentError is a failure on a connection the backend sent nothing on,
// typically because it closed the connection while it sat in the pool.
type silentError struct{ err error }

func (e *silentError) Error() string { return "reading response: " + e.err.Error() }
func (e *silentError) Unwrap() error { return e.err }

// exchange sends r and reads the response head. On success the connection
// belongs to the response body, which returns it to the pool or closes it.
func (pc *h1Conn) exchange(ctx context.Context, r *http.Request, got1xx func(int, http.Header) error) (*http.Response, error) {
	stop := context.AfterFunc(ctx, pc.abort)
	pc.nread = 0
	var wrote chan error
	if hasBody(r) {
		wrote = make(chan error, 1)
		go pc.writeAsync(r, wrote)
	} else if err := pc.writeHead(r); err != nil {
		stop()
		pc.close()
		return nil, &writeError{err}
	}
	resp, err := pc.readResponse(r, got1xx)
	if err != nil {
		stop()
		pc.close()
		select {
		case werr := <-wrote: // a failed write explains the failed read
			if werr != nil {
				return nil, werr
			}
		default:
		}
		if pc.nread == 0 {
			return nil, &silentError{err}
		}
		return nil, err
	}
	b := &h1Body{ctx: ctx, rc: resp.Body, pc: pc, stop: stop, wrote: wrote,
		keep: !resp.Close && !r.Close}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// writeAsync writes a request with a body. On failure it reports first and
// then closes the connection, so the reader it wakes finds the cause.
func (pc *h1Conn) writeAsync(r *http.Request, wrote chan<- error) {
	err := pc.writeRequest(r)
	if err != nil {
		err = &writeError{err}
	}
	wrote <- err
	if err != nil {
		pc.close()
	}
}

func (pc *h1Conn) writeHead(r *http.Request) error {
	if err := writeHead(pc.bw, r, false); err != nil {
		return err
	}
	return pc.bw.Flush()
}

// readResponse reads the final response head, passing 1xx responses to
// got1xx (which forwards them to the client).
func (pc *h1Conn) readResponse(r *http.Request, got1xx func(int, http.Header) error) (*http.Response, error) {
	defer func() { pc.budget = -1 }()
	for n := 0; ; n++ {
		pc.budget = maxResponseHeaderBytes
		resp, err := http.ReadResponse(pc.br, r)
		if err != nil {
			return nil, err
		}
		code := resp.StatusCode
		switch {
		case code >= 200:
			return resp, nil
		case code == http.StatusSwitchingProtocols:
			// upgrades go through http.Transport; this one was not asked for
			return nil, errors.New("upstream switched protocols unasked")
		case n >= max1xx:
			return nil, fmt.Errorf("upstream sent more than %d informational responses", max1xx)
		}
		if got1xx != nil {
			if err := got1xx(code, resp.Header); err != nil {
				return nil, err
			}
		}
	}
}

// h1Body is the response body: at EOF it hands the connection back to the
// pool (the reader, rc, never touches it again), on an early Close or an
// error it closes it, since unread bytes would corrupt the next exchange.
type h1Body struct {
	ctx   context.Context
	rc    io.ReadCloser
	pc    *h1Conn
	stop  func() bool
	wrote chan error // nil when the request had no body
	keep  bool       // both sides allow keep-alive
	done  bool
	err   error // returned by every Read after the exchange ended
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.finish(true)
	case err != nil:
		if b.ctx.Err() != nil {
			err = b.ctx.Err()
		}
		b.finish(false)
		b.err = err
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
		b.err = errors.New("read on closed response body")
	}
	return nil
}

// finish ends the exchange: the connection is reused only when the body
// was read to its end, the context did not fire, and the request body was
// written in full.
func (b *h1Body) finish(eof bool) {
	b.done, b.err = true, io.EOF
	stopped := b.stop()
	if eof && stopped && b.keep && b.wroteAll() {
		b.pc.client.put(b.pc)
		return
	}
	b.pc.close()
}

// wroteAll waits briefly for the request body writer, as http.Transport
// does: a backend may answer before the last bytes of the body are written.
func (b *h1Body) wroteAll() bool {
	if b.wrote == nil {
		return true
	}
	select {
	case err := <-b.wrote:
		return err == nil
	default:
	}
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case err := <-b.wrote:
		return err == nil
	case <-t.C:
		return false
	}
}
