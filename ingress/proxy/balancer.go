package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiffnet/skiff/ingress/routes"
)

var errNoEndpoint = errors.New("no endpoint")

// balancer is the reverse proxy's RoundTripper: it picks the endpoint
// (round robin over the ready ones, skipping ejected ones), retries once on
// another endpoint when the connection cannot be made, and keeps the
// keep-alive pools: the lean client's for plain HTTP/1.1 exchanges,
// http.Transport's for upgrades and Expect: 100-continue (h1) and for h2c
// backends.
type balancer struct {
	lean     *leanClient
	h1, h2c  *http.Transport
	ejectFor time.Duration
	metrics  *metrics

	// ejected maps "ip:port" to *health for endpoints that failed
	// recently; nEjected lets the common case (nothing failed) skip the
	// map lookup entirely.
	ejected  sync.Map
	nEjected atomic.Int32
}

type health struct {
	until atomic.Int64 // unix nanoseconds; 0 while only counting failures
	fails atomic.Int32
}

// errorsToEject is how many failed exchanges (other than dial failures,
// which eject at once) within EjectFor eject an endpoint.
const errorsToEject = 3

func newBalancer(o *Options, m *metrics) *balancer {
	dialer := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	mk := func() *http.Transport {
		return &http.Transport{
			DialContext:           dialer.DialContext,
			MaxIdleConns:          0, // unlimited overall; bounded per endpoint
			MaxIdleConnsPerHost:   o.MaxIdleConnsPerEndpoint,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
			// the client decides about compression; pass bytes through
			DisableCompression: true,
			Protocols:          new(http.Protocols),
		}
	}
	b := &balancer{h1: mk(), h2c: mk(), ejectFor: o.EjectFor, metrics: m,
		lean: newLeanClient(dialer, o.MaxIdleConnsPerEndpoint, 90*time.Second)}
	b.h1.Protocols.SetHTTP1(true)
	b.h2c.Protocols.SetUnencryptedHTTP2(true)
	return b
}

func (b *balancer) close() {
	b.lean.closeIdle()
	b.h1.CloseIdleConnections()
	b.h2c.CloseIdleConnections()
}

// pick returns the next endpoint of be that is not ejected and is not
// avoid. When every endpoint is ejected it still returns one (other than
// avoid if it can): failing over to something beats certain failure.
func (b *balancer) pick(be *routes.Backend, avoid string) string {
	eps := be.Endpoints
	n := uint64(len(eps))
	if n == 0 {
		return ""
	}
	start := be.Next()
	if b.nEjected.Load() == 0 {
		a := eps[start%n]
		if a == avoid && n > 1 {
			a = eps[(start+1)%n]
		}
		return a
	}
	now := time.Now().UnixNano()
	fallback := ""
	for i := uint64(0); i < n; i++ {
		a := eps[(start+i)%n]
		if a == avoid {
			continue
		}
		if !b.isEjected(a, now) {
			return a
		}
		if fallback == "" {
			fallback = a
		}
	}
	if fallback == "" {
		fallback = eps[start%n]
	}
	return fallback
}

func (b *balancer) isEjected(addr string, now int64) bool {
	v, ok := b.ejected.Load(addr)
	if !ok {
		return false
	}
	h := v.(*health)
	u := h.until.Load()
	if u == 0 {
		return false
	}
	if now < u {
		return true
	}
	// the ejection expired: forget the endpoint's history
	if b.ejected.CompareAndDelete(addr, v) {
		b.nEjected.Add(-1)
	}
	return false
}

// fail records a failed exchange with addr; dial failures eject at once.
func (b *balancer) fail(addr string, dial bool) {
	v, loaded := b.ejected.LoadOrStore(addr, &health{})
	if !loaded {
		b.nEjected.Add(1)
	}
	h := v.(*health)
	if dial || h.fails.Add(1) >= errorsToEject {
		if h.until.Swap(time.Now().Add(b.ejectFor).UnixNano()) == 0 {
			b.metrics.ejections.Inc()
		}
	}
}

func (b *balancer) transport(be *routes.Backend, r *http.Request) http.RoundTripper {
	// Upgrades (WebSocket) are an HTTP/1.1 mechanism; they go over h1
	// even to h2c backends.
	switch {
	case isUpgrade(r):
		return b.h1
	case be.Protocol == routes.H2C:
		return b.h2c
	case r.Header["Expect"] != nil:
		// http.Transport waits for the backend's 100 Continue before
		// sending the body; the lean client does not.
		return b.h1
	}
	return b.lean
}

func (b *balancer) RoundTrip(r *http.Request) (*http.Response, error) {
	st := stateOf(r.Context())
	if st == nil || st.backend == nil {
		return nil, errNoEndpoint
	}
	return b.roundTrip(r, st, b.transport(st.backend.Backend, r).RoundTrip)
}

// roundTrip sends r with send to an endpoint of st's backend, retrying
// once elsewhere when the connection cannot be made.
func (b *balancer) roundTrip(r *http.Request, st *state, send func(*http.Request) (*http.Response, error)) (*http.Response, error) {
	be := st.backend.Backend
	addr := b.pick(be, "")
	if addr == "" {
		return nil, errNoEndpoint
	}
	// The transport closes the body when it fails; keep the real body open
	// so a request whose body was not yet sent can be retried.
	var body *retryBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &retryBody{rc: r.Body}
		r.Body = body
	}
	r.URL.Host = addr
	st.upstream = addr
	resp, err := send(r)
	if err == nil {
		return resp, nil
	}
	if r.Context().Err() != nil {
		return nil, err
	}
	dial := isDialError(err)
	b.fail(addr, dial)
	b.metrics.upstreamErrors.WithLabelValues(reason(dial)).Inc()
	if !dial || (body != nil && body.read.Load()) {
		return nil, err
	}
	alt := b.pick(be, addr)
	if alt == "" || alt == addr {
		return nil, err
	}
	b.metrics.retries.Inc()
	r2 := r.Clone(r.Context())
	r2.URL.Host = alt
	if body != nil {
		r2.Body = &retryBody{rc: body.rc}
	}
	st.upstream = alt
	resp, err = send(r2)
	if err != nil && r.Context().Err() == nil {
		dial := isDialError(err)
		b.fail(alt, dial)
		b.metrics.upstreamErrors.WithLabelValues(reason(dial)).Inc()
	}
	return resp, err
}

func reason(dial bool) string {
	if dial {
		return "connect"
	}
	return "exchange"
}

// mirror sends a copy of a body-less request to one endpoint of be and
// discards the answer (the Gateway API's RequestMirror filter).
func (b *balancer) mirror(r *http.Request, be *routes.Backend) {
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		// mirroring a body would mean buffering it; Skiff mirrors
		// headers-only requests and leaves bodies to the primary.
		return
	}
	addr := b.pick(be, "")
	if addr == "" {
		return
	}
	m := r.Clone(context.WithoutCancel(r.Context()))
	m.RequestURI = ""
	m.URL.Scheme, m.URL.Host = "http", addr
	m.Body = nil
	go func() {
		ctx, cancel := context.WithTimeout(m.Context(), 10*time.Second)
		defer cancel()
		resp, err := b.transport(be, m).RoundTrip(m.WithContext(ctx))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
}

// retryBody forwards reads and notes whether any happened; Close is left
// to the server, which closes the request body when the handler returns.
type retryBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *retryBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *retryBody) Close() error { return nil }

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func isUpgrade(r *http.Request) bool {
	if r.Header.Get("Upgrade") == "" {
		return false
	}
	for _, v := range r.Header["Connection"] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return true
			}
		}
	}
	return false
}
