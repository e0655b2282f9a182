package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/skiffnet/skiff/ingress/routes"
)

type handler struct {
	p        *Proxy
	listener routes.Listener
}

type stateKey struct{}

// state travels with one request from the handler through the reverse
// proxy to the balancer and back.
type state struct {
	route    *routes.Route
	backend  *routes.WeightedBackend
	listener routes.Listener
	upstream string // the endpoint that answered, for the access log
}

func stateOf(ctx context.Context) *state {
	s, _ := ctx.Value(stateKey{}).(*state)
	return s
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	p := h.p
	// one allocation for both: they live exactly as long as the request
	x := &struct {
		rec recorder
		st  state
	}{recorder{ResponseWriter: w}, state{listener: h.listener}}
	rec, st := &x.rec, &x.st
	// The table is loaded once: the whole request sees one configuration.
	tab := p.table.Load()
	st.route = tab.Match(h.listener, localAddr(tab, r), r)
	h.serve(rec, r, st)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	d := time.Since(start)
	p.metrics.observe(st.route, rec.status, d)
	if al := p.opts.AccessLog; al != nil {
		name, upstream := "", st.upstream
		if st.route != nil {
			name = st.route.Name
		}
		al.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("listener", h.listener.String()),
			slog.String("remote", r.RemoteAddr),
			slog.String("proto", r.Proto),
			slog.String("method", r.Method),
			slog.String("host", r.Host),
			slog.String("path", r.URL.Path),
			slog.String("route", name),
			slog.String("upstream", upstream),
			slog.Int("status", rec.status),
			slog.Int64("bytes", rec.bytes),
			slog.Duration("duration", d),
		)
	}
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request, st *state) {
	rt := st.route
	if rt == nil {
		http.Error(w, "no route for "+r.Host+r.URL.Path, http.StatusNotFound)
		return
	}
	if f := &rt.Filters; f.Redirect != nil {
		redirect(w, r, f.Redirect, rt, h.listener)
		return
	}
	wb := rt.Pick()
	if wb == nil {
		// The Gateway API asks for 500 when no backendRef is valid.
		http.Error(w, "route has no valid backend", http.StatusInternalServerError)
		return
	}
	st.backend = wb
	if wb.Filters.Redirect != nil {
		redirect(w, r, wb.Filters.Redirect, rt, h.listener)
		return
	}
	switch {
	case wb.Status != 0:
		http.Error(w, http.StatusText(wb.Status), wb.Status)
		return
	case len(wb.Endpoints) == 0:
		http.Error(w, "no endpoints for "+wb.Name, http.StatusServiceUnavailable)
		return
	}
	for _, m := range wb.Filters.Mirrors {
		h.p.lb.mirror(r, m)
	}
	for _, m := range rt.Filters.Mirrors {
		h.p.lb.mirror(r, m)
	}
	if d := rt.Timeouts.Limit(); d > 0 {
		// The deadline ends the upstream exchange; upstreamError turns it
		// into 504, as the Gateway API asks of a request timeout.
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		r = r.WithContext(ctx)
	}
	if h.p.lb.transport(wb.Backend, r) == http.RoundTripper(h.p.lb.lean) {
		// the common case, without ReverseProxy's overhead
		h.p.forward(w, r, st)
		return
	}
	h.p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
}

// rewrite is the ReverseProxy's hook; see rewriteFor.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	p.rewriteFor(pr, stateOf(pr.In.Context()))
}

// rewriteFor prepares the outgoing request: the balancer fills in the
// endpoint. The Host header stays the client's, as Ingress controllers do.
func (p *Proxy) rewriteFor(pr *httputil.ProxyRequest, st *state) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.backend.Name // replaced by the balancer
	// Append to, rather than replace, X-Forwarded-For, as nginx does.
	if xff := pr.In.Header["X-Forwarded-For"]; len(xff) > 0 {
		pr.Out.Header["X-Forwarded-For"] = xff
	}
	pr.SetXForwarded()
	if st.listener == routes.HTTPS {
		pr.Out.Header.Set("X-Forwarded-Proto", "https")
	}
	for _, f := range [2]*routes.Filters{&st.route.Filters, &st.backend.Filters} {
		f.RequestHeaders.Apply(pr.Out.Header)
		if rw := f.Rewrite; rw != nil {
			if rw.Hostname != "" {
				pr.Out.Host = rw.Hostname
			}
			if rw.Path != nil {
				np := routes.RewritePath(rw.Path, pr.Out.URL.Path, st.route.Match.Path.Value)
				pr.Out.URL.Path, pr.Out.URL.RawPath = np, ""
			}
		}
	}
}

func modifyResponse(resp *http.Response) error {
	if st := stateOf(resp.Request.Context()); st != nil {
		applyResponseFilters(resp.Header, st)
	}
	return nil
}

func applyResponseFilters(h http.Header, st *state) {
	st.route.Filters.ResponseHeaders.Apply(h)
	st.backend.Filters.ResponseHeaders.Apply(h)
}

// proxyError is the ReverseProxy's error handler; see upstreamError.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	p.upstreamError(w, r, stateOf(r.Context()), err)
}

// upstreamError answers when no endpoint gave a response.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, st *state, err error) {
	code := http.StatusBadGateway
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// the client went away; nobody reads this answer
		code = 499
	case errors.Is(err, errNoEndpoint) || isDialError(err):
		code = http.StatusServiceUnavailable
	case errors.As(err, &ne) && ne.Timeout():
		code = http.StatusGatewayTimeout
	}
	if code != 499 {
		name := ""
		if st != nil {
			name = st.route.Name
		}
		p.log.Warn("ingress upstream error", "route", name, "host", r.Host, "path", r.URL.Path, "err", err)
	}
	w.WriteHeader(code)
}

func redirect(w http.ResponseWriter, r *http.Request, rd *routes.Redirect, rt *routes.Route, l routes.Listener) {
	scheme := "http"
	if l == routes.HTTPS {
		scheme = "https"
	}
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	host := r.Host
	port := ""
	if h, pt, err := net.SplitHostPort(r.Host); err == nil {
		host, port = h, pt
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	switch {
	case rd.Port != 0:
		port = strconv.Itoa(int(rd.Port))
	case rd.Scheme != "":
		// a scheme change without a port goes to that scheme's default port
		port = ""
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	u := url.URL{Scheme: scheme, Host: host, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	if rd.Path != nil {
		u.Path = routes.RewritePath(rd.Path, r.URL.Path, rt.Match.Path.Value)
	}
	code := rd.Status
	if code == 0 {
		code = http.StatusFound
	}
	w.Header().Set("Location", u.String())
	w.WriteHeader(code)
}

// recorder notes status and size for logs and metrics. Unwrap lets
// http.ResponseController reach Flush and Hijack (upgrades) underneath.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 || r.status < 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// localAddr is the address the client connected to, which picks the
// Gateway when Gateways have addresses of their own; the lookup is skipped
// when none has.
func localAddr(tab *routes.Table, r *http.Request) netip.Addr {
	if !tab.ByAddress() {
		return netip.Addr{}
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		return a.AddrPort().Addr()
	}
	return netip.Addr{}
}
