package h1server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/skiffnet/skiff/ingress/h1"
)

// Connection states, for Shutdown: only an idle connection (between
// requests, nothing read) may be closed under the client.
const (
	stateIdle int32 = iota
	stateActive
	stateClosed
)

// readBufSize is the pooled read buffer: enough for the heads of nearly
// all requests; a larger head gets a buffer of its own.
const readBufSize = 4 << 10

var (
	readBufs  = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}
	writeBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// errHandoff says the connection goes to the fallback from here on.
var errHandoff = errors.New("hand off to net/http")

// conn is one client connection on the lean path. Its goroutine owns every
// field; the request body (body) is the one part another goroutine (the
// upstream writer) may use, under body's lock, until the exchange ends.
type conn struct {
	srv   *Server
	nc    net.Conn        // *tls.Conn for TLS
	raw   syscall.RawConn // waits for the next request without a buffer; nil for TLS
	state atomic.Int32

	rbuf  []byte  // read buffer, nil while idle; unread bytes are rbuf[r:w]
	rbufp *[]byte // rbuf's pool entry, nil when rbuf is not from the pool
	r, w  int
	bw    *bufio.Writer // nil while idle

	// ready is the raw wait's callback, made once per connection (a
	// closure per wait would be an allocation per request); waited is
	// its state.
	ready  func(uintptr) bool
	waited bool

	ctx    context.Context
	cancel context.CancelFunc
	remote string
	tls    *tls.ConnectionState
	served int // requests served, to tell the first wait from idle ones

	head h1.Head
	base *http.Request // carries ctx; copied into req for every request
	req  http.Request
	hdr  http.Header
	vals []string // backing array for hdr's value slices
	body body
	resp response
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, remote: nc.RemoteAddr().String(), hdr: http.Header{}}
	if sc, ok := nc.(syscall.Conn); ok && s.cfg.TLS == nil {
		c.raw, _ = sc.SyscallConn()
	}
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.cfg.Fallback)
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, nc.LocalAddr())
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.base = (&http.Request{}).WithContext(c.ctx)
	c.body.c = c
	c.resp.c = c
	c.ready = c.readable
	return c
}

// serve runs the connection's exchanges until one side closes, an error,
// or a hand-off.
func (c *conn) serve() {
	handedOff := false
	defer func() {
		c.cancel()
		c.release()
		c.srv.untrack(c)
		if !handedOff {
			c.nc.Close()
		}
	}()
	if c.srv.cfg.TLS != nil {
		tc, err := c.handshake()
		if err != nil {
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			handedOff = c.handOff(nil)
			return
		}
	}
	for {
		if !c.waitRequest() {
			return
		}
		n, err := c.readHead()
		if err == nil {
			err = h1.Parse(c.rbuf[c.r:c.r+n], &c.head)
		}
		if err != nil {
			if errors.Is(err, errHandoff) || errors.Is(err, h1.ErrDefer) {
				handedOff = c.handOff(c.rbuf[c.r:c.w])
			}
			return
		}
		c.r += n
		if c.head.ContentLength > 0 {
			// ReadHeaderTimeout is for the head; like net/http without
			// a ReadTimeout, the body may take as long as it takes
			c.nc.SetReadDeadline(time.Time{})
		}
		if !c.exchange() {
			return
		}
		c.served++
		if !c.state.CompareAndSwap(stateActive, stateIdle) || c.srv.closing.Load() {
			return
		}
	}
}

// handshake completes TLS; a client speaking plain HTTP gets the answer
// net/http gives it.
func (c *conn) handshake() (*tls.Conn, error) {
	tc := tls.Server(c.nc, c.srv.cfg.TLS)
	c.nc = tc
	if d := c.srv.cfg.ReadHeaderTimeout; d > 0 {
		tc.SetDeadline(time.Now().Add(d))
	}
	if err := tc.HandshakeContext(c.ctx); err != nil {
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		c.srv.cfg.Logger.Debug("TLS handshake failed", "remote", c.remote, "err", err)
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	c.tls = &st
	return tc, nil
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// handOff passes the connection to the fallback, replaying read (the
// bytes the lean path read and did not serve). It reports whether the
// connection now belongs to the fallback.
func (c *conn) handOff(read []byte) bool {
	if c.state.Swap(stateClosed) == stateClosed {
		return false // Shutdown closed it
	}
	c.nc.SetDeadline(time.Time{})
	var nc net.Conn = c.nc
	if len(read) > 0 {
		nc = &replayConn{Conn: c.nc, pending: append([]byte(nil), read...)}
	}
	c.srv.untrack(c)
	c.srv.handoff.deliver(nc)
	return true
}

// waitRequest waits for the first bytes of the next request (unless they
// are buffered already), then marks the connection active.
func (c *conn) waitRequest() bool {
	d := c.srv.cfg.IdleTimeout
	if c.served == 0 || d <= 0 {
		d = c.srv.cfg.ReadHeaderTimeout
	}
	if c.r == c.w {
		c.r, c.w = 0, 0
		if d > 0 {
			c.nc.SetReadDeadline(time.Now().Add(d))
		}
		if !c.waitBytes() {
			return false
		}
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		return false
	}
	c.acquire()
	if d := c.srv.cfg.ReadHeaderTimeout; d > 0 {
		c.nc.SetReadDeadline(time.Now().Add(d))
	}
	return true
}

// waitBytes waits, idle, until the client sends something. A plain
// connection waits on the socket with no buffer at all: that is what makes
// idle keep-alive connections cheap. A TLS one reads into its buffer (TLS
// may hold decrypted bytes the socket no longer shows).
func (c *conn) waitBytes() bool {
	if c.raw == nil {
		c.acquire()
		n, err := c.nc.Read(c.rbuf)
		c.w = n
		return n > 0 || err == nil
	}
	c.release()
	c.waited = false
	return c.raw.Read(c.ready) == nil
}

// readable is the raw wait's callback: ready when bytes (or the client's
// EOF) are there; on the call after the poller's wait they are. The poller
// only reports new arrivals, so they must be checked for before waiting.
func (c *conn) readable(fd uintptr) bool {
	if c.waited {
		return true
	}
	c.waited = true
	return pending(fd)
}

func (c *conn) acquire() {
	if c.rbuf == nil {
		c.rbufp = readBufs.Get().(*[]byte)
		c.rbuf = *c.rbufp
		c.srv.buffers.Add(1)
	}
	if c.bw == nil {
		c.bw = writeBufs.Get().(*bufio.Writer)
		c.bw.Reset(c.nc)
		c.srv.buffers.Add(1)
	}
}

// release returns the buffers to their pools; it keeps nothing unread.
func (c *conn) release() {
	if c.rbuf != nil && c.r == c.w {
		c.putReadBuf()
		c.rbuf = nil
	}
	if c.bw != nil {
		c.bw.Reset(nil)
		writeBufs.Put(c.bw)
		c.bw = nil
		c.srv.buffers.Add(-1)
	}
}

// readHead reads until rbuf[r:] holds a complete head and returns its
// length. A head longer than MaxHeaderBytes, one that uses bare LFs, and
// a head cut short by the client's EOF go to the fallback (errHandoff),
// which answers them as net/http always did.
func (c *conn) readHead() (int, error) {
	scanned := 0 // where the scan for the head's end resumes (relative to r)
	for {
		if c.w > c.r {
			n, next, err := h1.End(c.rbuf[c.r:c.w], scanned)
			if err != nil {
				return 0, errHandoff
			}
			if n > 0 {
				return n, nil
			}
			scanned = next
			if c.w-c.r > c.srv.cfg.MaxHeaderBytes {
				return 0, errHandoff
			}
		}
		if c.w == len(c.rbuf) {
			c.makeRoom()
		}
		m, err := c.nc.Read(c.rbuf[c.w:])
		c.w += m
		if err != nil {
			if errors.Is(err, io.EOF) && c.w > c.r {
				return 0, errHandoff
			}
			return 0, err
		}
	}
}

// makeRoom moves the unread bytes to the front of rbuf or, when they fill
// it, grows it (up to what a head may take).
func (c *conn) makeRoom() {
	if c.r > 0 {
		c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
		c.r = 0
		return
	}
	nb := make([]byte, min(2*len(c.rbuf), c.srv.cfg.MaxHeaderBytes+readBufSize))
	copy(nb, c.rbuf[:c.w])
	c.putReadBuf()
	c.rbuf = nb
}

// putReadBuf returns the pooled read buffer, if rbuf is one.
func (c *conn) putReadBuf() {
	if c.rbufp != nil {
		readBufs.Put(c.rbufp)
		c.rbufp = nil
		c.srv.buffers.Add(-1)
	}
}

// exchange serves the request whose head is in c.head and reports whether
// the connection may serve another.
func (c *conn) exchange() bool {
	r := c.request()
	w := &c.resp
	w.reset(r)
	if !c.run(w, r) {
		c.body.abandon()
		return false
	}
	w.finish()
	bodyDone := c.body.abandon()
	if c.head.ContentLength > 0 {
		// the upstream writer may still hold header values of this
		// request; the next one gets fresh ones
		c.vals = nil
	}
	return bodyDone && !w.closeAfter && w.err == nil
}

// run calls the handler; a panic ends the connection. http.ErrAbortHandler
// is the handler's way to cut the response off and is not logged.
func (c *conn) run(w *response, r *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
			if v != http.ErrAbortHandler {
				c.srv.cfg.Logger.Error("handler panic", "remote", c.remote, "panic", v, "stack", string(debug.Stack()))
			}
		}
	}()
	c.srv.cfg.Handler.ServeHTTP(w, r)
	return true
}

// request fills the connection's reused http.Request from the head.
func (c *conn) request() *http.Request {
	h := &c.head
	clear(c.hdr)
	vals := c.vals[:0]
	if cap(vals) < len(h.Fields) {
		vals = make([]string, 0, max(len(h.Fields), 16))
	}
	for _, f := range h.Fields {
		vals = append(vals, f.Value)
		v := vals[len(vals)-1 : len(vals) : len(vals)]
		if old := c.hdr[f.Name]; old != nil {
			v = append(old, f.Value)
		}
		c.hdr[f.Name] = v
	}
	c.vals = vals
	r := &c.req
	*r = *c.base
	r.Method = h.Method
	r.URL = &h.URL
	r.Proto, r.ProtoMajor, r.ProtoMinor = h.Proto(), 1, h.ProtoMinor
	r.Header = c.hdr
	r.Host = h.Host
	r.RequestURI = h.RequestURI
	r.RemoteAddr = c.remote
	r.TLS = c.tls
	r.Close = h.Close
	r.ContentLength = h.ContentLength
	r.Body = http.NoBody
	c.body.start(h.ContentLength)
	if h.ContentLength > 0 {
		r.Body = &c.body
	}
	return r
}

// body reads a request body of known length from the connection: first
// what the head's read left in the buffer, then the socket straight into
// the caller's buffer.
type body struct {
	c      *conn
	mu     sync.Mutex
	left   atomic.Int64
	closed bool
}

func (b *body) start(n int64) {
	b.left.Store(n)
	b.closed = false
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	left := b.left.Load()
	if left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	c := b.c
	var n int
	var err error
	if c.r < c.w {
		n = copy(p, c.rbuf[c.r:c.w])
		c.r += n
	} else {
		n, err = c.nc.Read(p)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
	}
	b.left.Add(int64(-n))
	return n, err
}

// Close is a no-op: the connection decides what happens to unread bytes
// once the exchange ends (abandon).
func (b *body) Close() error { return nil }

// abandon ends the body's use by other goroutines and reports whether it
// was read to its end. A body left unread makes the connection close: the
// reader that may still be blocked on the socket is woken first.
func (b *body) abandon() bool {
	done := b.left.Load() == 0
	if !done {
		b.c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return done
}
