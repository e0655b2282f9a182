// Package records is the model of Skiff's cluster DNS: it turns Services and
// EndpointSlices into the resource records of the Kubernetes DNS-Based Service
// Discovery specification, as an immutable Table that a server swaps in
// atomically. It needs no network and no API server: give it plain objects.
package records

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// SchemaVersion is the version of the Kubernetes DNS schema served in the
// dns-version TXT record.
const SchemaVersion = "1.1.0"

// DefaultZone and DefaultTTL match what kubelet and CoreDNS assume.
const (
	DefaultZone = "cluster.local"
	DefaultTTL  = 30
)

// Options shape a Table.
type Options struct {
	// Zone is the cluster domain (default cluster.local).
	Zone string
	// TTL of every record, and the negative-caching TTL of the zone's SOA
	// (default 30 seconds).
	TTL uint32
	// Serial of the SOA; callers bump it on every rebuild so secondaries
	// and caches can tell tables apart (default 1).
	Serial uint32
}

func (o *Options) defaults() error {
	if o.Zone == "" {
		o.Zone = DefaultZone
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.Serial == 0 {
		o.Serial = 1
	}
	z := strings.ToLower(dns.Fqdn(o.Zone))
	if _, ok := dns.IsDomainName(z); !ok || z == "." {
		return fmt.Errorf("zone %q: want a domain name such as cluster.local", o.Zone)
	}
	o.Zone = z
	return nil
}

// Name holds the records at one owner name. A Name with no records is an
// empty non-terminal: it exists (NODATA) but answers nothing.
type Name struct {
	RRs []dns.RR
	// Alias is set for an ExternalName Service: the name holds only a CNAME
	// whose target a resolver must chase for every other query type.
	Alias bool
}

// Of returns the records of type qtype (all of them for ANY).
func (n *Name) Of(qtype uint16) []dns.RR {
	if n == nil {
		return nil
	}
	if qtype == dns.TypeANY {
		return n.RRs
	}
	var out []dns.RR
	for _, rr := range n.RRs {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	return out
}

// Table is an immutable snapshot of every cluster name. Keys are lowercased
// fully qualified names; lookups must lowercase the question first.
type Table struct {
	Zone  string // lowercased, fully qualified: "cluster.local."
	TTL   uint32
	SOA   *dns.SOA
	names map[string]*Name
}

// Lookup returns the Name for a lowercased fully qualified name, or nil when
// no such name exists (NXDOMAIN). Computed pod names (a-b-c-d.ns.pod.zone)
// are not in the table; see PodAddr.
func (t *Table) Lookup(name string) *Name {
	return t.names[name]
}

// Len is the number of owner names, including empty non-terminals.
func (t *Table) Len() int { return len(t.names) }

// Each calls fn for every owner name.
func (t *Table) Each(fn func(name string, n *Name)) {
	for k, v := range t.names {
		fn(k, v)
	}
}

// InZone reports whether the lowercased fully qualified name is the zone or
// below it.
func (t *Table) InZone(name string) bool {
	return name == t.Zone || strings.HasSuffix(name, "."+t.Zone)
}

func newTable(o Options) *Table {
	t := &Table{Zone: o.Zone, TTL: o.TTL, names: make(map[string]*Name)}
	t.SOA = &dns.SOA{
		Hdr:     dns.RR_Header{Name: o.Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: o.TTL},
		Ns:      "ns.dns." + o.Zone,
		Mbox:    "hostmaster." + o.Zone,
		Serial:  o.Serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  o.TTL,
	}
	t.add(t.SOA)
	t.add(&dns.TXT{
		Hdr: t.hdr("dns-version."+o.Zone, dns.TypeTXT),
		Txt: []string{SchemaVersion},
	})
	t.ensure("svc." + o.Zone)
	t.ensure("pod." + o.Zone)
	return t
}

func (t *Table) hdr(name string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: t.TTL}
}

// ensure creates name and its ancestors down to the zone as empty
// non-terminals, so NODATA and NXDOMAIN come out right for them.
func (t *Table) ensure(name string) *Name {
	n, ok := t.names[name]
	if !ok {
		n = &Name{}
		t.names[name] = n
		if name != t.Zone && t.InZone(name) {
			if i := strings.IndexByte(name, '.'); i >= 0 {
				t.ensure(name[i+1:])
			}
		}
	}
	return n
}

// add appends rr at its owner unless an identical record is already there.
func (t *Table) add(rr dns.RR) {
	n := t.ensure(rr.Header().Name)
	for _, have := range n.RRs {
		if dns.IsDuplicate(have, rr) {
			return
		}
	}
	n.RRs = append(n.RRs, rr)
}

// addAddr adds an A or AAAA record for ip at name.
func (t *Table) addAddr(name string, ip netip.Addr) {
	if ip.Is4() {
		t.add(&dns.A{Hdr: t.hdr(name, dns.TypeA), A: ip.AsSlice()})
		return
	}
	t.add(&dns.AAAA{Hdr: t.hdr(name, dns.TypeAAAA), AAAA: ip.AsSlice()})
}

// addPTR adds the reverse record of ip pointing at target. Reverse names live
// outside the zone, so they get no empty non-terminals.
func (t *Table) addPTR(ip netip.Addr, target string) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	t.add(&dns.PTR{Hdr: t.hdr(rev, dns.TypePTR), Ptr: target})
}
