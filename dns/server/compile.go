package server

import (
	"fmt"
	"strings"

	"github.com/miekg/dns"

	"github.com/skiffnet/skiff/dns/records"
)

// body is the packed answer, authority and additional sections of one
// response, ready to follow a copied question. Records owned by the question
// name point at it (0xC00C), so the answer carries the question's own case
// and the body does not depend on where the question ends.
type body struct {
	rcode      int
	an, ns, ar uint16
	b          []byte
}

type typed struct {
	qtype uint16
	body  body
}

// entry is one owner name's precomputed responses.
type entry struct {
	types []typed
	// alias names (ExternalName) answer only CNAME themselves; every other
	// type needs the CNAME target chased, which the slow path does.
	alias bool
}

func (e *entry) lookup(qtype uint16) *body {
	for i := range e.types {
		if e.types[i].qtype == qtype {
			return &e.types[i].body
		}
	}
	return nil
}

// zone is a records.Table compiled to wire format, keyed by the lowercased
// wire form of each name so the hot path never builds a string.
type zone struct {
	table    *records.Table
	key      []byte // the zone's wire name, lowercased
	labels   int    // labels in the zone name, root excluded
	names    map[string]*entry
	nodata   body // SOA in authority, NOERROR
	nxdomain body // SOA in authority, NXDOMAIN
	ttl      uint32
}

func compile(t *records.Table) (*zone, error) {
	key, err := wireName(t.Zone)
	if err != nil {
		return nil, fmt.Errorf("zone %q: %w", t.Zone, err)
	}
	z := &zone{
		table:  t,
		key:    key,
		labels: dns.CountLabel(t.Zone),
		names:  make(map[string]*entry, t.Len()),
		ttl:    t.TTL,
	}
	soa, err := packRR(t.SOA, "")
	if err != nil {
		return nil, err
	}
	z.nodata = body{rcode: dns.RcodeSuccess, ns: 1, b: soa}
	z.nxdomain = body{rcode: dns.RcodeNameError, ns: 1, b: soa}
	var firstErr error
	t.Each(func(name string, n *records.Name) {
		if err := z.add(name, n); err != nil && firstErr == nil {
			firstErr = err
		}
	})
	return z, firstErr
}

func (z *zone) add(name string, n *records.Name) error {
	k, err := wireName(name)
	if err != nil {
		return fmt.Errorf("name %q: %w", name, err)
	}
	e := &entry{alias: n.Alias}
	seen := map[uint16]bool{}
	for _, rr := range n.RRs {
		seen[rr.Header().Rrtype] = true
	}
	if len(n.RRs) > 0 {
		seen[dns.TypeANY] = true
	}
	for qtype := range seen {
		b, err := z.pack(name, n.Of(qtype))
		if err != nil {
			return fmt.Errorf("name %q type %s: %w", name, dns.TypeToString[qtype], err)
		}
		e.types = append(e.types, typed{qtype: qtype, body: b})
	}
	z.names[string(k)] = e
	return nil
}

// pack packs rrs, owned by the question name, plus the addresses of SRV
// targets in the additional section (spec 2.3.2 and 2.4.2 allow it, and it
// saves clients a round trip).
func (z *zone) pack(qname string, rrs []dns.RR) (body, error) {
	var b body
	for _, rr := range rrs {
		p, err := packRR(rr, qname)
		if err != nil {
			return b, err
		}
		b.b = append(b.b, p...)
		b.an++
	}
	for _, rr := range rrs {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		for _, a := range z.table.Lookup(srv.Target).Of(dns.TypeANY) {
			if t := a.Header().Rrtype; t != dns.TypeA && t != dns.TypeAAAA {
				continue
			}
			p, err := packRR(a, "")
			if err != nil {
				return b, err
			}
			b.b = append(b.b, p...)
			b.ar++
		}
	}
	return b, nil
}

// packRR packs rr without compression; when its owner is qname the owner
// becomes a pointer to the question at offset 12.
func packRR(rr dns.RR, qname string) ([]byte, error) {
	buf := make([]byte, dns.MaxMsgSize)
	end, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", rr, err)
	}
	if qname == "" || !strings.EqualFold(rr.Header().Name, qname) {
		return buf[:end:end], nil
	}
	nameLen, err := dns.PackDomainName(rr.Header().Name, make([]byte, 256), 0, nil, false)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 2+end-nameLen)
	out = append(out, 0xC0, 0x0C)
	return append(out, buf[nameLen:end]...), nil
}

// wireName is the lowercased, uncompressed wire form of a fully qualified name.
func wireName(name string) ([]byte, error) {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(strings.ToLower(dns.Fqdn(name)), buf, 0, nil, false)
	if err != nil {
		return nil, err
	}
	return buf[:n:n], nil
}
