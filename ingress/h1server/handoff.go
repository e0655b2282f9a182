package h1server

import (
	"net"
	"sync"
)

// handoffListener is the net.Listener the fallback http.Server serves:
// its Accept returns the connections the lean path handed over, in
// whatever state they are (a *tls.Conn after the handshake, a replayConn
// with a head already read). Closing it (http.Server.Shutdown does) makes
// Accept return net.ErrClosed, which ends the fallback's Serve.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// deliver passes c to the fallback server; once the listener is closed
// nobody will serve c, so it is closed instead.
func (l *handoffListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// replayConn is a connection whose first bytes were already read by the
// lean path: Read returns them again before reading from the socket, so
// net/http sees the connection exactly as the client sent it.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite lets net/http half-close the connection after an error
// answer (so the client reads it before the reset), as it does on a
// *net.TCPConn.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
