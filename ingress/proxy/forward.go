package proxy

import (
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// forward proxies r over the lean client (the exchanges balancer.transport
// gives it). It does what httputil.ReverseProxy does for them (hop-by-hop
// headers, X-Forwarded-*, filters, 1xx, trailers, flushing, error
// handling) without ReverseProxy's per-request copies of the request, its
// context and trace, and the response headers: at one core those cost about
// as much as the exchange with the backend itself.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, st *state) {
	out := p.outRequest(r, st)
	got1xx := func(code int, h http.Header) error { return write1xx(w, code, h) }
	resp, err := p.lb.roundTrip(out, st, func(o *http.Request) (*http.Response, error) {
		return p.lb.lean.do(o, got1xx)
	})
	if err != nil {
		p.upstreamError(w, r, st, err)
		return
	}
	p.relay(w, resp, st)
}

// outRequest is the request to send upstream: a shallow copy of r (same
// context, same body) with its own URL and header map.
func (p *Proxy) outRequest(r *http.Request, st *state) *http.Request {
	out := new(http.Request)
	*out = *r
	u := *r.URL
	u.RawQuery = cleanQuery(u.RawQuery)
	out.URL = &u
	out.RequestURI, out.Close = "", false
	if r.ContentLength == 0 {
		out.Body = nil
	}
	out.Header = forwardHeaders(r.Header)
	p.rewriteFor(&httputil.ProxyRequest{In: r, Out: out}, st)
	return out
}

// hopByHop are the fields that describe one connection, not the message
// (RFC 9110 7.6.1), plus the ones RFC 2616 listed, as ReverseProxy removes.
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// forwarding are the client's forwarding fields, replaced by ours (see
// rewriteFor, which appends to the client's X-Forwarded-For).
var forwarding = map[string]bool{
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

// forwardHeaders copies the end-to-end fields of in. The value slices are
// shared but capped, so a filter's append cannot write into the client's.
func forwardHeaders(in http.Header) http.Header {
	h := make(http.Header, len(in)+3)
	for k, vv := range in {
		if !hopByHop[k] && !forwarding[k] {
			h[k] = vv[:len(vv):len(vv)]
		}
	}
	dropConnectionTokens(h, in["Connection"])
	// tell the backend we pass trailers on when the client said it takes them
	if httpguts.HeaderValuesContainsToken(in["Te"], "trailers") {
		h["Te"] = []string{"trailers"}
	}
	return h
}

// dropConnectionTokens removes the fields the Connection header names: the
// sender declared them hop-by-hop (RFC 9110 7.6.1).
func dropConnectionTokens(h http.Header, conn []string) {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				delete(h, http.CanonicalHeaderKey(f))
			}
		}
	}
}

// cleanQuery drops a query that does not parse (a ';' separator, a bad
// escape) to its parsable parameters, as ReverseProxy does, so the backend
// cannot read it differently from us.
func cleanQuery(s string) string {
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func reencode(s string) string {
	v, _ := url.ParseQuery(s)
	return v.Encode()
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// write1xx passes an informational response on to the client.
func write1xx(w http.ResponseWriter, code int, hdr http.Header) error {
	h := w.Header()
	for k, vv := range hdr {
		h[k] = append(h[k], vv...)
	}
	w.WriteHeader(code)
	// WriteHeader keeps the fields of a 1xx for the final response
	clear(h)
	return nil
}

// relay sends the backend's response to the client.
func (p *Proxy) relay(w http.ResponseWriter, resp *http.Response, st *state) {
	defer resp.Body.Close()
	removeHopByHop(resp.Header)
	applyResponseFilters(resp.Header, st)
	h := w.Header()
	for k, vv := range resp.Header {
		if len(h[k]) == 0 {
			h[k] = vv // the response is ours; no need to copy
		} else {
			h[k] = append(h[k], vv...)
		}
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	if err := p.copyBody(w, resp); err != nil {
		// all that is left is to cut the client off, so it sees the
		// response is incomplete (as ReverseProxy does)
		panic(http.ErrAbortHandler)
	}
	resp.Body.Close() // sets the trailer values
	copyTrailers(w, resp, announced)
}

func removeHopByHop(h http.Header) {
	dropConnectionTokens(h, h["Connection"])
	for k := range hopByHop {
		delete(h, k)
	}
}

func copyTrailers(w http.ResponseWriter, resp *http.Response, announced int) {
	if len(resp.Trailer) == 0 {
		return
	}
	// flushing forces chunked coding, without which trailers cannot follow
	http.NewResponseController(w).Flush()
	h := w.Header()
	for k, vv := range resp.Trailer {
		if len(resp.Trailer) != announced {
			k = http.TrailerPrefix + k
		}
		h[k] = append(h[k], vv...)
	}
}

// copyBody streams the body; streams of unknown length and server-sent
// events are flushed after every read, as ReverseProxy does.
func (p *Proxy) copyBody(w http.ResponseWriter, resp *http.Response) error {
	flush := resp.ContentLength == -1 || isEventStream(resp.Header.Get("Content-Type"))
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if flush {
				http.NewResponseController(w).Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			p.log.Debug("ingress upstream body read failed", "err", rerr)
			return rerr
		}
	}
}

// isEventStream reports whether ct is text/event-stream, without the
// allocations of mime.ParseMediaType on every response.
func isEventStream(ct string) bool {
	const es = "text/event-stream"
	ct = strings.TrimLeft(ct, " \t")
	if len(ct) < len(es) || !strings.EqualFold(ct[:len(es)], es) {
		return false
	}
	rest := strings.TrimLeft(ct[len(es):], " \t")
	return rest == "" || rest[0] == ';'
}
