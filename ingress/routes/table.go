// Package routes is the model of Skiff's L7 proxy: it compiles Ingresses,
// Gateway API objects, Services, EndpointSlices and Secrets into an immutable
// Table that the proxy swaps in atomically. It needs no network and no API
// server: give it plain objects and ask it where a request goes.
package routes

import (
	"crypto/tls"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Listener says on which of the proxy's sockets a request arrived. Ingress
// rules serve both; a Gateway listener serves the one its port maps to.
type Listener uint8

const (
	HTTP Listener = iota
	HTTPS
)

func (l Listener) String() string {
	if l == HTTPS {
		return "https"
	}
	return "http"
}

// Protocol is how the proxy speaks to a backend.
type Protocol uint8

const (
	// HTTP1 is HTTP/1.1 over plain TCP, the default.
	HTTP1 Protocol = iota
	// H2C is HTTP/2 with prior knowledge over plain TCP, chosen by the
	// Service port's appProtocol kubernetes.io/h2c (gRPC backends).
	H2C
)

// AppProtocolH2C is the Service port appProtocol that selects H2C.
const AppProtocolH2C = "kubernetes.io/h2c"

// Table is one immutable routing configuration. All methods are safe for
// concurrent use; the only mutable state is the round-robin counters of its
// backends, which are atomic.
type Table struct {
	// listeners serve requests to the nodes' own addresses: Ingresses and
	// the Gateways that have no address of their own.
	listeners site
	// gateways serve requests to a Gateway's own address (see
	// GatewayAddress): only that Gateway's routes answer there, so two
	// Gateways with the same listeners do not share routes.
	gateways map[netip.Addr]*site
	// fallback answers requests no rule matched (the Ingress default
	// backend); nil means 404.
	fallback *Route
	certs    certs
	routes   int
}

// site is the routes behind one address, by listener.
type site [2]hosts

// Routes returns how many routes the table holds (for metrics and logs).
func (t *Table) Routes() int { return t.routes }

// GatewayAddresses returns the addresses of Gateways that have one, sorted:
// the node must accept traffic for them (see ingress/vip).
func (t *Table) GatewayAddresses() []netip.Addr {
	out := make([]netip.Addr, 0, len(t.gateways))
	for a := range t.gateways {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// ByAddress reports whether Match needs the address a request arrived on,
// so the proxy looks it up only when some Gateway has an address.
func (t *Table) ByAddress() bool { return len(t.gateways) > 0 }

// Match returns the route for a request arriving on listener l at local
// address local (the zero Addr when unknown), or nil when none matches (the
// proxy answers 404).
func (t *Table) Match(l Listener, local netip.Addr, r *http.Request) *Route {
	host := NormalizeHost(r.Host)
	if len(t.gateways) > 0 {
		if s := t.gateways[local.Unmap()]; s != nil {
			return s[l].group(host).match(r)
		}
	}
	if rt := t.listeners[l].group(host).match(r); rt != nil {
		return rt
	}
	return t.fallback
}

// Certificate returns the certificate for a TLS client hello's server name:
// exact name first, then a wildcard one label up, then the default one.
// It returns nil when the table holds no certificate at all.
func (t *Table) Certificate(serverName string) *tls.Certificate {
	return t.certs.lookup(NormalizeHost(serverName))
}

// hosts holds one listener's routes by request host: exact names, wildcard
// suffixes (longest first) and the routes that match any host.
type hosts struct {
	exact map[string]*group
	wild  []*wildGroup
	any   *group
}

type wildGroup struct {
	suffix string // ".example.com"
	// single is the Ingress meaning of "*.": exactly one label. The Gateway
	// API's is a suffix match of one or more labels.
	single bool
	g      *group
}

func (w *wildGroup) matches(host string) bool {
	if len(host) <= len(w.suffix) || !strings.HasSuffix(host, w.suffix) {
		return false
	}
	return !w.single || !strings.Contains(host[:len(host)-len(w.suffix)], ".")
}

// group picks the most specific host group for host. Requests never fall
// through from a more specific host to a less specific one: like a virtual
// host, once a name is claimed its rules alone decide.
func (h *hosts) group(host string) *group {
	if g := h.exact[host]; g != nil {
		return g
	}
	for _, w := range h.wild {
		if w.matches(host) {
			return w.g
		}
	}
	return h.any
}

// group holds the routes of one host, indexed for the precedence of the
// Ingress and Gateway API specifications: an Exact path before any prefix,
// then the longest prefix, then method, header and query conditions.
// Regular expressions (precedence left to implementations) come between
// Exact and prefixes, as in Envoy-based gateways: a regex is written to
// carve out requests a broader prefix would otherwise take.
type group struct {
	exact  map[string][]*Route
	prefix []*Route // longest first
	regex  []*Route // in order
}

// insert files rt under its path match's kind; sortGroup orders them.
func (g *group) insert(rt *Route) {
	switch rt.Match.Path.Type {
	case Exact:
		if g.exact == nil {
			g.exact = map[string][]*Route{}
		}
		g.exact[rt.Match.Path.Value] = append(g.exact[rt.Match.Path.Value], rt)
	case Regex:
		g.regex = append(g.regex, rt)
	default:
		g.prefix = append(g.prefix, rt)
	}
}

func (g *group) match(r *http.Request) *Route {
	if g == nil {
		return nil
	}
	p := cleanPath(r.URL.Path)
	for _, rt := range g.exact[p] {
		if rt.Match.conditions(r) {
			return rt
		}
	}
	for _, rt := range g.regex {
		if rt.Match.Path.re.MatchString(p) && rt.Match.conditions(r) {
			return rt
		}
	}
	for _, rt := range g.prefix {
		if rt.Match.Path.matchPrefix(p) && rt.Match.conditions(r) {
			return rt
		}
	}
	return nil
}

// Route is one match and what to do with the requests it matches.
type Route struct {
	// Name identifies the route in logs and metrics: kind/namespace/name
	// of the object it came from.
	Name  string
	Match Match
	// Filters apply to every request of the route, before the backend's.
	Filters Filters
	// Backends share the route's traffic by weight. A route with only a
	// redirect filter has none.
	Backends []WeightedBackend
	// Timeouts bound the request (HTTPRoute rule timeouts); zero: none.
	Timeouts Timeouts
	total    int64
	// order breaks ties between otherwise equal matches: older objects,
	// then namespace/name, then rule and match position.
	order int
}

// Timeouts are an HTTPRoute rule's: Request bounds the whole exchange as
// the client sees it, BackendRequest each attempt at a backend.
type Timeouts struct {
	Request, BackendRequest time.Duration
}

// Limit is the deadline the proxy puts on a request: the shorter of the
// two, as Skiff tries a backend again only when it could not connect
// (backendRequest may not exceed request). Zero: none.
func (t Timeouts) Limit() time.Duration {
	switch {
	case t.Request == 0:
		return t.BackendRequest
	case t.BackendRequest == 0:
		return t.Request
	}
	return min(t.Request, t.BackendRequest)
}

// WeightedBackend is one backendRef of a route.
type WeightedBackend struct {
	*Backend
	Weight  int32
	Filters Filters
}

// Pick chooses a backend by weight. It draws from the runtime's per-thread
// generator (no lock, no shared counter) so weights hold statistically over
// any stream of requests. It returns nil when the route has no backend or
// all weights are zero.
func (r *Route) Pick() *WeightedBackend {
	switch {
	case len(r.Backends) == 1 && r.total > 0:
		return &r.Backends[0]
	case r.total <= 0:
		return nil
	}
	n := rand.Int64N(r.total)
	for i := range r.Backends {
		if w := int64(r.Backends[i].Weight); w > 0 {
			if n -= w; n < 0 {
				return &r.Backends[i]
			}
		}
	}
	return &r.Backends[len(r.Backends)-1]
}

func (r *Route) finish() {
	r.total = 0
	for _, b := range r.Backends {
		if b.Weight > 0 {
			r.total += int64(b.Weight)
		}
	}
}

// Backend is one Service port resolved to endpoint addresses. Backends are
// shared by every route that names the same Service port, so round robin
// spreads over all of their traffic.
type Backend struct {
	// Name is namespace/service:port.
	Name     string
	Protocol Protocol
	// Endpoints are the ready addresses ("ip:port"). When none are ready,
	// the serving endpoints of terminating pods stand in, so a rolling
	// update never leaves a window with nothing to send to.
	Endpoints []string
	// Status, when not zero, is the HTTP status to answer instead of
	// proxying: 500 for a backendRef that does not resolve (Gateway API),
	// 503 for a Service without endpoints.
	Status  int
	counter atomic.Uint64
}

// Next returns the round-robin start index for the next request.
func (b *Backend) Next() uint64 { return b.counter.Add(1) - 1 }

func sortGroup(g *group) {
	for _, rs := range g.exact {
		sort.SliceStable(rs, func(i, j int) bool { return less(rs[i], rs[j]) })
	}
	sort.SliceStable(g.prefix, func(i, j int) bool { return less(g.prefix[i], g.prefix[j]) })
	sort.SliceStable(g.regex, func(i, j int) bool { return less(g.regex[i], g.regex[j]) })
}

// less orders routes by the specifications' precedence.
func less(a, b *Route) bool {
	am, bm := &a.Match, &b.Match
	if la, lb := len(am.Path.Value), len(bm.Path.Value); la != lb {
		return la > lb
	}
	if (am.Method != "") != (bm.Method != "") {
		return am.Method != ""
	}
	if len(am.Headers) != len(bm.Headers) {
		return len(am.Headers) > len(bm.Headers)
	}
	if len(am.Query) != len(bm.Query) {
		return len(am.Query) > len(bm.Query)
	}
	return a.order < b.order
}
