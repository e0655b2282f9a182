// Package server answers DNS queries for the cluster zone from a compiled
// records.Table and hands every other name to a Forwarder. The common query
// (one question for a cluster name) is answered from precomputed wire bytes
// without unpacking or allocating; miekg/dns handles the rest.
package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffnet/skiff/dns/records"
)

// Forwarder resolves names outside the cluster zone.
type Forwarder interface {
	Exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, error)
}

// Handler turns a query's bytes into a response's bytes. It is safe for
// concurrent use; Update swaps the served table atomically.
type Handler struct {
	zone    atomic.Pointer[zone]
	fwd     Forwarder
	metrics *metrics
	log     *slog.Logger
}

// NewHandler returns a Handler serving t. fwd may be nil: other names then
// get SERVFAIL. reg may be nil.
func NewHandler(t *records.Table, fwd Forwarder, reg prometheus.Registerer, log *slog.Logger) (*Handler, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{fwd: fwd, metrics: m, log: log}
	if err := h.Update(t); err != nil {
		return nil, err
	}
	return h, nil
}

// Update compiles t and serves it from now on.
func (h *Handler) Update(t *records.Table) error {
	z, err := compile(t)
	if err != nil {
		return err
	}
	h.zone.Store(z)
	return nil
}

// Table returns the table being served.
func (h *Handler) Table() *records.Table { return h.zone.Load().table }

// Fast answers req into out when it can without unpacking or forwarding.
// handled is false when the caller must call Slow (possibly concurrently:
// Slow may wait on an upstream). A nil response with handled true means the
// packet is dropped.
func (h *Handler) Fast(req, out []byte, tcp bool) (resp []byte, handled bool) {
	var q query
	if !q.parse(req) {
		return nil, false
	}
	maxSize := dns.MaxMsgSize
	if !tcp {
		maxSize = q.udpLimit()
	}
	resp, rcode, v := h.zone.Load().answer(req, &q, out, maxSize)
	if v == slowPath {
		return nil, false
	}
	h.metrics.count(q.qtype, rcode)
	return resp, true
}

// Answer answers req into out, forwarding when needed. It returns nil to
// drop req. Listeners that want to keep the hot path off the goroutines that
// wait for upstreams call Fast and Slow themselves.
func (h *Handler) Answer(ctx context.Context, req, out []byte, tcp bool) []byte {
	if resp, ok := h.Fast(req, out, tcp); ok {
		return resp
	}
	return h.Slow(ctx, req, out, tcp)
}

// Slow answers everything the hot path declined: malformed and unusual
// queries, ExternalName chasing and forwarding.
func (h *Handler) Slow(ctx context.Context, req, out []byte, tcp bool) []byte {
	m := new(dns.Msg)
	// Malformed packets are dropped, not answered with FORMERR: a reply
	// to garbage helps no client and lets spoofed packets reflect off us.
	if err := m.Unpack(req); err != nil || m.Response {
		h.metrics.dropped.Inc()
		return nil
	}
	resp := h.slowMsg(ctx, m, tcp)
	var qtype uint16
	if len(m.Question) > 0 {
		qtype = m.Question[0].Qtype
	}
	h.metrics.count(qtype, resp.Rcode)
	limit := dns.MaxMsgSize
	if !tcp {
		limit = udpLimit(m)
	}
	resp.Truncate(limit)
	b, err := resp.PackBuffer(out[:cap(out)])
	if err != nil {
		h.log.Debug("cannot pack a response", "question", m.Question, "err", err)
		h.metrics.dropped.Inc()
		return nil
	}
	return b
}

func udpLimit(m *dns.Msg) int {
	if opt := m.IsEdns0(); opt != nil && opt.UDPSize() >= 512 {
		return min(int(opt.UDPSize()), maxUDP)
	}
	return 512
}

func (h *Handler) slowMsg(ctx context.Context, m *dns.Msg, tcp bool) *dns.Msg {
	switch {
	case m.Opcode != dns.OpcodeQuery:
		return reply(m, dns.RcodeNotImplemented)
	case len(m.Question) != 1:
		return reply(m, dns.RcodeFormatError)
	}
	if opt := m.IsEdns0(); opt != nil && opt.Version() != 0 {
		return reply(m, dns.RcodeBadVers)
	}
	z := h.zone.Load()
	q := m.Question[0]
	name := strings.ToLower(q.Name)
	if z.table.InZone(name) {
		// The zone is computed per node from informers: there is nothing
		// coherent to transfer, and no class but IN.
		if q.Qclass != dns.ClassINET || q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
			return reply(m, dns.RcodeRefused)
		}
		return h.local(ctx, z, m, tcp)
	}
	return h.forward(ctx, m)
}

// reply is an empty response to m with rcode, keeping EDNS0 if m used it.
func reply(m *dns.Msg, rcode int) *dns.Msg {
	r := new(dns.Msg)
	r.SetRcode(m, rcode)
	r.RecursionAvailable = true
	if m.IsEdns0() != nil {
		r.SetEdns0(maxUDP, false)
	}
	return r
}

// local answers an in-zone question the hot path passed on: one written in
// an unusual encoding (compression pointers), or an ExternalName to chase.
func (h *Handler) local(ctx context.Context, z *zone, m *dns.Msg, tcp bool) *dns.Msg {
	q := m.Question[0]
	if n := z.table.Lookup(strings.ToLower(q.Name)); n != nil && n.Alias && q.Qtype != dns.TypeCNAME {
		return h.chase(ctx, z, m)
	}
	r, err := h.exchangeFast(z, m, tcp)
	if err != nil {
		return reply(m, dns.RcodeServerFailure)
	}
	return r
}

var errNotLocal = errors.New("not answered locally")

// exchangeFast runs m through the hot path in its canonical encoding.
func (h *Handler) exchangeFast(z *zone, m *dns.Msg, tcp bool) (*dns.Msg, error) {
	c := m.Copy()
	c.Compress = false
	c.Answer, c.Ns = nil, nil
	c.Extra = nil
	if opt := m.IsEdns0(); opt != nil {
		c.SetEdns0(opt.UDPSize(), false)
	}
	req, err := c.Pack()
	if err != nil {
		return nil, err
	}
	var q query
	if !q.parse(req) {
		return nil, errNotLocal
	}
	maxSize := dns.MaxMsgSize
	if !tcp {
		maxSize = q.udpLimit()
	}
	out, _, v := z.answer(req, &q, make([]byte, 0, 512), maxSize)
	if v == slowPath {
		return nil, errNotLocal
	}
	r := new(dns.Msg)
	if err := r.Unpack(out); err != nil {
		return nil, err
	}
	r.Id = m.Id
	return r, nil
}

// maxChase bounds CNAME chains through ExternalName Services.
const maxChase = 8

// chase answers an ExternalName Service (spec 2.5): its CNAME, then the
// target's records of the asked type, from the cluster or upstream.
func (h *Handler) chase(ctx context.Context, z *zone, m *dns.Msg) *dns.Msg {
	r := reply(m, dns.RcodeSuccess)
	r.Authoritative = true
	q := m.Question[0]
	name := strings.ToLower(q.Name)
	for range maxChase {
		n := z.table.Lookup(name)
		if n == nil || !n.Alias {
			break
		}
		cname := dns.Copy(n.Of(dns.TypeCNAME)[0]).(*dns.CNAME)
		if len(r.Answer) == 0 {
			cname.Hdr.Name = q.Name // echo the question's case
		}
		r.Answer = append(r.Answer, cname)
		name = cname.Target
	}
	if z.table.Lookup(name) != nil && z.table.Lookup(name).Alias {
		return r // a loop of ExternalNames: answer the chain so far
	}
	sub := new(dns.Msg)
	sub.SetQuestion(name, q.Qtype)
	sub.RecursionDesired = true
	var t *dns.Msg
	var err error
	if z.table.InZone(name) {
		t, err = h.exchangeFast(z, sub, true)
	} else {
		t, err = h.forward(ctx, sub), nil
	}
	if err != nil {
		r.Rcode = dns.RcodeServerFailure
		return r
	}
	r.Rcode = t.Rcode
	r.Answer = append(r.Answer, t.Answer...)
	if len(t.Answer) == 0 {
		r.Ns = t.Ns
	}
	return r
}

// forward resolves m upstream, answering SERVFAIL when nothing answers.
func (h *Handler) forward(ctx context.Context, m *dns.Msg) *dns.Msg {
	if h.fwd == nil {
		return reply(m, dns.RcodeServerFailure)
	}
	up, err := h.fwd.Exchange(ctx, m)
	if err != nil {
		h.log.Debug("upstream failed", "question", m.Question[0].String(), "err", err)
		return reply(m, dns.RcodeServerFailure)
	}
	r := up.Copy()
	r.Id = m.Id
	r.Response = true
	r.Question = m.Question
	r.RecursionDesired = m.RecursionDesired
	r.RecursionAvailable = true
	r.Truncated = false
	// EDNS0 is hop by hop: speak it to the client only if the client did.
	extra := r.Extra[:0]
	for _, rr := range r.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	r.Extra = extra
	if m.IsEdns0() != nil {
		r.SetEdns0(maxUDP, false)
	}
	return r
}
