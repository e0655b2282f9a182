// Package forward resolves names outside the cluster zone through the
// node's upstream resolvers, with a cache that honours TTLs (positive and
// negative) and serves stale answers while every upstream is down.
package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Forwarder.
type Options struct {
	// Upstreams are HOST:PORT resolvers, tried in order.
	Upstreams []string
	// MaxEntries bounds the cache (default 10,000).
	MaxEntries int
	// MaxTTL caps how long an answer is cached (default 1 hour); NegTTL is
	// used for negative answers without an SOA (default 30 s).
	MaxTTL, NegTTL time.Duration
	// StaleFor is how long past expiry an answer may still be served when
	// no upstream answers (default 1 hour).
	StaleFor time.Duration
	// Timeout per upstream attempt (default 2 s).
	Timeout time.Duration
	// StaleWait is how long a question whose cached answer has expired
	// waits for the upstreams before the stale answer is sent instead
	// (default 1 s). RFC 8767 suggests 1.8 s; 1 s keeps a dead upstream well
	// inside the 5 s a glibc resolver waits. The refresh goes on in the
	// background and replaces the entry if it succeeds.
	StaleWait time.Duration
	// Registerer receives the cache and upstream metrics; nil means none.
	Registerer prometheus.Registerer
}

// FromResolvConf reads the upstream resolvers from a resolv.conf file.
func FromResolvConf(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read upstream resolvers from %s: %w", path, err)
	}
	var ups []string
	for _, s := range cc.Servers {
		ups = append(ups, net.JoinHostPort(s, cc.Port))
	}
	if len(ups) == 0 {
		return nil, fmt.Errorf("%s lists no nameserver", path)
	}
	return ups, nil
}

// Forwarder is a caching forwarder; it is safe for concurrent use.
type Forwarder struct {
	o       Options
	now     func() time.Time
	metrics *metrics

	mu    sync.Mutex
	cache map[key]*entry
}

type key struct {
	name  string
	qtype uint16
	class uint16
}

type entry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

// New returns a Forwarder.
func New(o Options) (*Forwarder, error) {
	if len(o.Upstreams) == 0 {
		return nil, errors.New("forward: no upstream resolvers")
	}
	if o.MaxEntries == 0 {
		o.MaxEntries = 10000
	}
	if o.MaxTTL == 0 {
		o.MaxTTL = time.Hour
	}
	if o.NegTTL == 0 {
		o.NegTTL = 30 * time.Second
	}
	if o.StaleFor == 0 {
		o.StaleFor = time.Hour
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.StaleWait == 0 {
		o.StaleWait = time.Second
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("forward: metrics: %w", err)
	}
	return &Forwarder{o: o, now: time.Now, metrics: m, cache: map[key]*entry{}}, nil
}

// Exchange answers req from the cache or an upstream.
func (f *Forwarder) Exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	if len(req.Question) != 1 {
		return nil, errors.New("forward: want exactly one question")
	}
	q := req.Question[0]
	k := key{strings.ToLower(q.Name), q.Qtype, q.Qclass}
	now := f.now()
	f.mu.Lock()
	e := f.cache[k]
	f.mu.Unlock()
	if e != nil && now.Before(e.expires) {
		f.metrics.hit.Inc()
		return e.answer(req, now), nil
	}
	if e == nil || !now.Before(e.expires.Add(f.o.StaleFor)) {
		f.metrics.miss.Inc()
		return f.refresh(ctx, k, req)
	}
	// Expired but still servable: ask the upstreams, but do not let a dead
	// one hold the client past StaleWait.
	type result struct {
		resp *dns.Msg
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// The refresh outlives this question so that its answer is cached
		// for the next one; it is bounded by the per-upstream timeout.
		resp, err := f.refresh(context.WithoutCancel(ctx), k, req.Copy())
		done <- result{resp, err}
	}()
	timer := time.NewTimer(f.o.StaleWait)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err == nil {
			f.metrics.miss.Inc()
			r.resp.Id = req.Id
			return r.resp, nil
		}
	case <-timer.C:
	case <-ctx.Done():
	}
	f.metrics.stale.Inc()
	return e.answer(req, f.now()), nil
}

// refresh asks the upstreams and caches a usable answer.
func (f *Forwarder) refresh(ctx context.Context, k key, req *dns.Msg) (*dns.Msg, error) {
	resp, err := f.upstream(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.Rcode == dns.RcodeSuccess || resp.Rcode == dns.RcodeNameError {
		f.store(k, resp, f.now())
	}
	return resp, nil
}

func (f *Forwarder) upstream(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	var errs []error
	for _, up := range f.o.Upstreams {
		start := time.Now()
		c := &dns.Client{Net: "udp", Timeout: f.o.Timeout}
		resp, _, err := c.ExchangeContext(ctx, req, up)
		if err == nil && resp.Truncated {
			c.Net = "tcp"
			resp, _, err = c.ExchangeContext(ctx, req, up)
		}
		if err == nil && (resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused) {
			// A resolver that cannot help is as good as a dead one: try
			// the next, and keep serving stale answers meanwhile.
			err = fmt.Errorf("answered %s", dns.RcodeToString[resp.Rcode])
		}
		if err == nil {
			f.metrics.upstream.WithLabelValues(up).Observe(time.Since(start).Seconds())
			return resp, nil
		}
		f.metrics.upstreamErrors.WithLabelValues(up).Inc()
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	return nil, fmt.Errorf("no upstream resolver answered: %w", errors.Join(errs...))
}

func (f *Forwarder) store(k key, resp *dns.Msg, now time.Time) {
	ttl := f.ttl(resp)
	if ttl <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.cache) >= f.o.MaxEntries {
		// Evict expired entries first, then anything: a simple bound, not
		// an LRU, is enough for a node's forwarded names.
		for ek, e := range f.cache {
			if now.After(e.expires.Add(f.o.StaleFor)) || len(f.cache) >= f.o.MaxEntries {
				delete(f.cache, ek)
			}
			if len(f.cache) < f.o.MaxEntries*9/10 {
				break
			}
		}
	}
	f.cache[k] = &entry{msg: resp.Copy(), stored: now, expires: now.Add(ttl)}
}

// ttl is the smallest TTL of the answer, or the SOA minimum of a negative
// answer (RFC 2308), capped.
func (f *Forwarder) ttl(m *dns.Msg) time.Duration {
	lowest := ^uint32(0)
	rrs := m.Answer
	if len(rrs) == 0 {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				lowest = min(soa.Minttl, soa.Hdr.Ttl)
			}
		}
		if lowest == ^uint32(0) {
			return f.o.NegTTL
		}
	}
	for _, rr := range rrs {
		lowest = min(lowest, rr.Header().Ttl)
	}
	return min(time.Duration(lowest)*time.Second, f.o.MaxTTL)
}

// answer is the cached message for req, TTLs lowered by its age (never
// below 0, and 30 s for stale answers, as RFC 8767 suggests).
func (e *entry) answer(req *dns.Msg, now time.Time) *dns.Msg {
	m := e.msg.Copy()
	m.Id = req.Id
	// The cache is keyed case-insensitively, but a client that randomises
	// case (0x20) checks it: records of the question name take its case.
	qname := req.Question[0].Name
	for _, rr := range m.Answer {
		if h := rr.Header(); h.Name != qname && strings.EqualFold(h.Name, qname) {
			h.Name = qname
		}
	}
	m.Question = req.Question
	age := uint32(now.Sub(e.stored) / time.Second)
	stale := now.After(e.expires)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			switch {
			case stale:
				h.Ttl = 30
			case h.Ttl > age:
				h.Ttl -= age
			default:
				h.Ttl = 0
			}
		}
	}
	return m
}
