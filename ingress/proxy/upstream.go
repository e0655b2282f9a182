package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"
)

// leanClient is the upstream client for plain HTTP/1.1 exchanges (no
// upgrade, no h2c, no Expect): the bulk of ingress traffic. http.Transport
// runs two goroutines per connection and hands every request and response
// across channels between them; at GOMAXPROCS=1 those switches cost more
// than the proxying itself. This client does the exchange in the caller's
// goroutine: write the head (and, for a body-less request, nothing else),
// read the response with http.ReadResponse, stream the body, and put the
// connection back in a per-endpoint pool when the body was read to its end
// and both sides allow keep-alive. Only a request body is written from a
// goroutine, so a backend that answers before reading it all does not
// deadlock us (as with http.Transport).
type leanClient struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int           // idle connections kept per endpoint
	idleTimeout time.Duration // idle connections older than this are closed

	mu    sync.Mutex
	pools map[string]*idlePool
}

// idlePool holds one endpoint's idle connections, most recently used last:
// taking from the end reuses the connection likeliest to be alive and lets
// the others age out.
type idlePool struct {
	conns []*h1Conn
	sweep *time.Timer // closes connections idle longer than idleTimeout
}

// maxResponseHeaderBytes matches http.Transport's default limit, so a
// backend cannot make the proxy buffer unbounded headers.
const maxResponseHeaderBytes = 10 << 20

// max1xx bounds informational responses before the final one, as
// http.Transport does, so a backend cannot keep a request busy forever.
const max1xx = 5

// checkIdleAfter is how long a connection must have been idle before it is
// checked for a close from the backend (one non-blocking peek) before
// reuse. Connections cycling faster than this skip the system call; a
// backend closing one in that window is the race http.Transport has too,
// and the retry rules below cover it.
const checkIdleAfter = 5 * time.Millisecond

func newLeanClient(d *net.Dialer, maxIdle int, idleTimeout time.Duration) *leanClient {
	return &leanClient{dial: d.DialContext, maxIdle: maxIdle, idleTimeout: idleTimeout, pools: map[string]*idlePool{}}
}

// RoundTrip sends r to r.URL.Host. A pooled connection that turns out to
// have been closed by the backend is replaced by a new one, once, when the
// request can be sent again safely (see canRetry).
func (c *leanClient) RoundTrip(r *http.Request) (*http.Response, error) {
	return c.do(r, traceHook(r))
}

// traceHook passes 1xx responses to the request's httptrace hook, which is
// how httputil.ReverseProxy forwards them.
func traceHook(r *http.Request) func(int, http.Header) error {
	t := httptrace.ContextClientTrace(r.Context())
	if t == nil || t.Got1xxResponse == nil {
		return nil
	}
	return func(code int, h http.Header) error { return t.Got1xxResponse(code, textproto.MIMEHeader(h)) }
}

// do is RoundTrip with got1xx called for each informational response.
func (c *leanClient) do(r *http.Request, got1xx func(int, http.Header) error) (*http.Response, error) {
	ctx := r.Context()
	fresh := false
	for {
		pc, err := c.conn(ctx, r.URL.Host, fresh)
		if err != nil {
			return nil, err
		}
		resp, err := pc.exchange(ctx, r, got1xx)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			// the caller tells canceled clients (499) from timeouts (504)
			// by this error, as with http.Transport
			return nil, ctx.Err()
		}
		if fresh || !pc.reused || !canRetry(r, err) {
			return nil, err
		}
		fresh = true
	}
}

// canRetry reports whether a request that failed on a reused connection
// may be sent again: the same rules as http.Transport. Nothing of its body
// may have been consumed, and either the backend cannot have seen the whole
// request (the write failed) or it said nothing and the request is
// idempotent.
func canRetry(r *http.Request, err error) bool {
	if !bodyUnread(r) {
		return false
	}
	var we *writeError
	if errors.As(err, &we) {
		return true
	}
	var se *silentError
	return errors.As(err, &se) && idempotent(r)
}

func bodyUnread(r *http.Request) bool {
	switch b := r.Body.(type) {
	case nil:
		return true
	case *retryBody:
		return !b.read.Load()
	}
	return r.Body == http.NoBody
}

func idempotent(r *http.Request) bool {
	switch r.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "":
		return true
	}
	_, ok := r.Header["Idempotency-Key"]
	_, xok := r.Header["X-Idempotency-Key"]
	return ok || xok
}

// conn returns an idle connection to addr, or a new one when fresh is set
// or none is idle.
func (c *leanClient) conn(ctx context.Context, addr string, fresh bool) (*h1Conn, error) {
	if !fresh {
		if pc := c.idle(addr); pc != nil {
			return pc, nil
		}
	}
	nc, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newH1Conn(c, nc, addr), nil
}

// idle pops the most recently used idle connection that is still open.
func (c *leanClient) idle(addr string) *h1Conn {
	now := time.Now()
	for {
		c.mu.Lock()
		p := c.pools[addr]
		if p == nil || len(p.conns) == 0 {
			c.mu.Unlock()
			return nil
		}
		pc := p.conns[len(p.conns)-1]
		p.conns[len(p.conns)-1] = nil
		p.conns = p.conns[:len(p.conns)-1]
		c.mu.Unlock()
		idle := now.Sub(pc.idleSince)
		if idle < c.idleTimeout && (idle < checkIdleAfter || pc.alive()) {
			pc.reused = true
			return pc
		}
		pc.close()
	}
}

// put returns a connection whose exchange ended cleanly to its pool.
func (c *leanClient) put(pc *h1Conn) {
	if pc.br.Buffered() > 0 {
		// bytes nobody asked for: the backend is out of step with us
		pc.close()
		return
	}
	pc.idleSince = time.Now()
	c.mu.Lock()
	p := c.pools[pc.addr]
	if p == nil {
		p = &idlePool{}
		c.pools[pc.addr] = p
	}
	if len(p.conns) >= c.maxIdle {
		c.mu.Unlock()
		pc.close()
		return
	}
	p.conns = append(p.conns, pc)
	if p.sweep == nil {
		addr := pc.addr
		p.sweep = time.AfterFunc(c.idleTimeout, func() { c.sweep(addr, p) })
	}
	c.mu.Unlock()
}

// sweep closes connections of addr idle longer than idleTimeout and forgets
// the pool when it is empty, so endpoints that went away leave nothing
// open behind.
func (c *leanClient) sweep(addr string, p *idlePool) {
	deadline := time.Now().Add(-c.idleTimeout)
	c.mu.Lock()
	if c.pools[addr] != p {
		// closeIdle or an earlier sweep replaced the pool
		c.mu.Unlock()
		return
	}
	n := 0 // the oldest connections are first
	for n < len(p.conns) && p.conns[n].idleSince.Before(deadline) {
		n++
	}
	old := append([]*h1Conn(nil), p.conns[:n]...)
	p.conns = append(p.conns[:0], p.conns[n:]...)
	if len(p.conns) == 0 {
		delete(c.pools, addr)
	} else {
		p.sweep.Reset(p.conns[0].idleSince.Sub(deadline))
	}
	c.mu.Unlock()
	for _, pc := range old {
		pc.close()
	}
}

// closeIdle closes every idle connection; connections in use go back to
// fresh pools when their exchanges end.
func (c *leanClient) closeIdle() {
	c.mu.Lock()
	pools := c.pools
	c.pools = map[string]*idlePool{}
	c.mu.Unlock()
	for _, p := range pools {
		p.sweep.Stop()
		for _, pc := range p.conns {
			pc.close()
		}
	}
}
