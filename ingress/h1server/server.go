// Package h1server serves plain HTTP/1.x keep-alive exchanges without
// net/http's per-connection machinery: one goroutine per connection reads
// each request head into reused structures (package h1), calls the handler
// in that same goroutine and writes the response through a pooled buffer.
// Buffers are returned to their pools while a connection is idle, so an
// idle keep-alive connection costs little more than its goroutine.
//
// Everything else is handed to a net/http Server, the fallback, on the
// same connection: TLS connections that negotiated h2, h2c, upgrades
// (WebSocket), Expect, Transfer-Encoding, and any head the h1 parser does
// not accept, including every malformed one, so errors are answered by
// net/http exactly as before.
package h1server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Server.
type Config struct {
	// Handler serves the requests of the lean path. It gets a
	// ResponseWriter that flushes (http.Flusher) but cannot hijack.
	Handler http.Handler
	// Fallback serves the connections the lean path hands over. It must
	// not be started by the caller: Serve runs it on a listener of its own.
	// For TLS it needs a TLSConfig offering h2 so that it serves HTTP/2
	// on the *tls.Conn it is given.
	Fallback *http.Server
	// TLS, when set, makes the server terminate TLS on accepted
	// connections before reading requests.
	TLS *tls.Config
	// MaxHeaderBytes bounds the request head the lean path reads; a
	// larger head goes to the fallback, which answers 431.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading a request head (and the TLS
	// handshake); IdleTimeout bounds the wait for the next request.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// Logger gets operational messages (handler panics).
	Logger *slog.Logger
}

// Server is a lean HTTP/1.x server with a net/http fallback.
type Server struct {
	cfg     Config
	handoff *handoffListener

	closing atomic.Bool
	// buffers counts the pooled buffers connections hold: idle ones
	// hold none, which is what keeps them cheap (and what a test checks).
	buffers atomic.Int64
	mu      sync.Mutex
	ln      net.Listener
	conns   map[*conn]struct{}
	served  chan error // the fallback's Serve result
	// fallbackErr is that result, read once (Shutdown may be called again)
	fallbackOnce sync.Once
	fallbackErr  error
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	return &Server{cfg: cfg, conns: map[*conn]struct{}{}}
}

// Serve accepts connections on ln until Shutdown, serving them lean or
// handing them to the fallback. It returns http.ErrServerClosed after
// Shutdown, like http.Server.Serve.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.handoff = newHandoffListener(ln.Addr())
	s.served = make(chan error, 1)
	s.mu.Unlock()
	go func() { s.served <- s.cfg.Fallback.Serve(s.handoff) }()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("h1server accept: %w", err)
			}
			// Out of file descriptors and the like: wait and try again,
			// as net/http does, rather than give up serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.cfg.Logger.Warn("accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := newConn(s, nc)
		if !s.track(c) {
			nc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// pollInterval is how often Shutdown checks whether the lean
// connections finished (net/http polls the same way).
const pollInterval = 10 * time.Millisecond

// Shutdown stops accepting, closes idle connections, lets the exchanges
// in flight finish (their connections close after the response), shuts the
// fallback down the same way, and returns when all are done or ctx ends; then
// it closes what is left and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	fbErr := make(chan error, 1)
	go func() { fbErr <- s.cfg.Fallback.Shutdown(ctx) }()

	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var err error
	for {
		if s.closeIdle() == 0 {
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
			s.closeAll()
		case <-t.C:
			continue
		}
		break
	}
	if ferr := <-fbErr; ferr != nil && err == nil {
		err = fmt.Errorf("fallback shutdown: %w", ferr)
	}
	s.mu.Lock()
	served := s.served
	s.mu.Unlock()
	if served != nil {
		s.fallbackOnce.Do(func() { s.fallbackErr = <-served })
		if serr := s.fallbackErr; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = fmt.Errorf("fallback: %w", serr)
		}
	}
	return err
}

// closeIdle closes the connections waiting for a request and returns how
// many are left (busy ones).
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.nc.Close()
			delete(s.conns, c)
		}
	}
	return len(s.conns)
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.state.Store(stateClosed)
		c.nc.Close()
		delete(s.conns, c)
	}
}
