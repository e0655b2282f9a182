// Package proxy is Skiff's L7 data plane: servers (the lean HTTP/1.1 path
// of package h1server in front of net/http) that route each request through the current routes.Table straight to a ready endpoint.
// The table is swapped atomically; a request uses the table it started with
// from beginning to end, so a change never drops or splits a request.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffnet/skiff/ingress/h1server"
	"github.com/skiffnet/skiff/ingress/routes"
)

// Options configure a Proxy. Zero values pick the defaults noted.
type Options struct {
	// HTTPAddr and HTTPSAddr are the listen addresses (":80", ":443");
	// empty disables that listener.
	HTTPAddr  string
	HTTPSAddr string
	// Logger gets operational messages (default slog.Default()).
	Logger *slog.Logger
	// AccessLog, when set, gets one line per request.
	AccessLog *slog.Logger
	// Registerer gets the proxy's metrics; nil registers nowhere.
	Registerer prometheus.Registerer

	// DialTimeout bounds connecting to an endpoint (default 2s); a dial
	// that fails is retried once on another endpoint.
	DialTimeout time.Duration
	// EjectFor is how long an endpoint that failed is skipped (default 10s).
	EjectFor time.Duration
	// MaxHeaderBytes bounds request headers (default 64 KiB); larger
	// requests get 431.
	MaxHeaderBytes int
	// ReadHeaderTimeout (default 10s) and IdleTimeout (default 2m) keep
	// slow or idle clients from holding connections forever.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// MaxIdleConnsPerEndpoint is the keep-alive pool per endpoint
	// (default 512).
	MaxIdleConnsPerEndpoint int
	// ShutdownTimeout is how long Serve lets in-flight requests finish
	// after its context ends (default 10s).
	ShutdownTimeout time.Duration
	// DefaultCertificate answers TLS clients no certificate of the table
	// matches; nil generates a self-signed one at start.
	DefaultCertificate *tls.Certificate
	// NetHTTPOnly serves every connection with net/http instead of the
	// lean HTTP/1.1 path (package h1server): an escape hatch, and the
	// baseline bench/ingress compares with.
	NetHTTPOnly bool
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.EjectFor == 0 {
		o.EjectFor = 10 * time.Second
	}
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.ReadHeaderTimeout == 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.MaxIdleConnsPerEndpoint == 0 {
		o.MaxIdleConnsPerEndpoint = 512
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
}

// Proxy routes requests by the current table.
type Proxy struct {
	opts    Options
	log     *slog.Logger
	table   atomic.Pointer[routes.Table]
	rp      *httputil.ReverseProxy
	lb      *balancer
	metrics *metrics
	defCert *tls.Certificate

	mu      sync.Mutex
	servers []server
}

// server is what ServeListeners runs per listener: an *http.Server or an
// *h1server.Server in front of one.
type server interface {
	Shutdown(context.Context) error
}

// New returns a Proxy with an empty table (every request gets 404 until
// the first Swap).
func New(opts Options) (*Proxy, error) {
	opts.defaults()
	p := &Proxy{opts: opts, log: opts.Logger}
	p.metrics = newMetrics(opts.Registerer)
	p.lb = newBalancer(&p.opts, p.metrics)
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      p.lb,
		BufferPool:     bufferPool{},
		ModifyResponse: modifyResponse,
		ErrorHandler:   p.proxyError,
		// ReverseProxy logs only what ErrorHandler does not see (copy
		// errors mid-body); those are client or backend hang-ups.
		ErrorLog: log.New(slogWriter{opts.Logger}, "", 0),
	}
	p.defCert = opts.DefaultCertificate
	if p.defCert == nil {
		crt, err := selfSigned()
		if err != nil {
			return nil, fmt.Errorf("default certificate: %w", err)
		}
		p.defCert = crt
	}
	p.table.Store(routes.Build(routes.Input{}).Table)
	return p, nil
}

// Swap makes t the table for every request that starts from now on.
func (p *Proxy) Swap(t *routes.Table) {
	p.table.Store(t)
	p.metrics.swapped(t)
}

// Table returns the current table.
func (p *Proxy) Table() *routes.Table { return p.table.Load() }

// Handler returns the handler for requests arriving on listener l; tests
// and embedders can mount it on their own servers.
func (p *Proxy) Handler(l routes.Listener) http.Handler {
	return &handler{p: p, listener: l}
}

// TLSConfig returns the server TLS configuration: certificates chosen by
// SNI from the current table, HTTP/2 offered by ALPN.
func (p *Proxy) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if crt := p.table.Load().Certificate(hello.ServerName); crt != nil {
				return crt, nil
			}
			return p.defCert, nil
		},
	}
}

func (p *Proxy) server(l routes.Listener) *http.Server {
	s := &http.Server{
		Handler:           p.Handler(l),
		ReadHeaderTimeout: p.opts.ReadHeaderTimeout,
		IdleTimeout:       p.opts.IdleTimeout,
		MaxHeaderBytes:    p.opts.MaxHeaderBytes,
		ErrorLog:          log.New(slogWriter{p.log}, "", 0),
		Protocols:         new(http.Protocols),
	}
	s.Protocols.SetHTTP1(true)
	if l == routes.HTTPS {
		s.Protocols.SetHTTP2(true)
		s.TLSConfig = p.TLSConfig()
	} else {
		// h2c with prior knowledge (gRPC clients, curl --http2-prior-knowledge).
		s.Protocols.SetUnencryptedHTTP2(true)
	}
	return s
}

// Serve listens on the configured addresses and serves until ctx ends,
// then lets in-flight requests finish for up to ShutdownTimeout.
func (p *Proxy) Serve(ctx context.Context) error {
	var httpLn, httpsLn net.Listener
	var err error
	if p.opts.HTTPAddr != "" {
		if httpLn, err = net.Listen("tcp", p.opts.HTTPAddr); err != nil {
			return fmt.Errorf("ingress http listener: %w", err)
		}
	}
	if p.opts.HTTPSAddr != "" {
		if httpsLn, err = net.Listen("tcp", p.opts.HTTPSAddr); err != nil {
			if httpLn != nil {
				httpLn.Close()
			}
			return fmt.Errorf("ingress https listener: %w", err)
		}
	}
	return p.ServeListeners(ctx, httpLn, httpsLn)
}

// ServeListeners is Serve on listeners the caller opened; either may be nil.
func (p *Proxy) ServeListeners(ctx context.Context, httpLn, httpsLn net.Listener) error {
	errc := make(chan error, 2)
	n := 0
	start := func(l routes.Listener, ln net.Listener) {
		if ln == nil {
			return
		}
		s := p.server(l)
		var srv server = s
		serve := s.Serve
		switch {
		case p.opts.NetHTTPOnly && l == routes.HTTPS:
			serve = func(ln net.Listener) error { return s.ServeTLS(ln, "", "") }
		case !p.opts.NetHTTPOnly:
			cfg := h1server.Config{
				Handler:           s.Handler,
				Fallback:          s,
				MaxHeaderBytes:    p.opts.MaxHeaderBytes,
				ReadHeaderTimeout: p.opts.ReadHeaderTimeout,
				IdleTimeout:       p.opts.IdleTimeout,
				Logger:            p.log,
			}
			if l == routes.HTTPS {
				// the lean path terminates TLS itself and hands h2
				// connections to s (which keeps a config of its own)
				cfg.TLS = p.TLSConfig()
			}
			lean := h1server.New(cfg)
			srv, serve = lean, lean.Serve
		}
		p.mu.Lock()
		p.servers = append(p.servers, srv)
		p.mu.Unlock()
		n++
		p.log.Info("ingress proxy listening", "listener", l.String(), "addr", ln.Addr().String(), "lean", !p.opts.NetHTTPOnly)
		go func() {
			err := serve(ln)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
	}
	start(routes.HTTP, httpLn)
	start(routes.HTTPS, httpsLn)
	if n == 0 {
		return errors.New("ingress proxy: no listener configured")
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		n--
		err = fmt.Errorf("ingress proxy: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), p.opts.ShutdownTimeout)
	defer cancel()
	p.mu.Lock()
	servers := p.servers
	p.servers = nil
	p.mu.Unlock()
	for _, s := range servers {
		if serr := s.Shutdown(sctx); serr != nil && err == nil {
			err = fmt.Errorf("ingress proxy shutdown: %w", serr)
		}
	}
	for ; n > 0; n-- {
		<-errc
	}
	p.lb.close()
	return err
}

// bufferPool recycles the 32 KiB copy buffers of the reverse proxy.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// slogWriter sends net/http's log lines (TLS handshake errors, bad
// requests) to slog at debug level: they are about clients, not us.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	n := len(b)
	if n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	w.l.Debug(string(b), "component", "ingress-proxy")
	return n, nil
}
