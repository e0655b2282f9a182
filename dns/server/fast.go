package server

import (
	"bytes"
	"encoding/binary"

	"github.com/miekg/dns"

	"github.com/skiffnet/skiff/dns/records"
)

// The hot path works on the raw query: it parses the one question into a
// lowercased key, finds the precomputed body and writes header + the copied
// question + body (+ OPT) into the caller's buffer. No message is unpacked or
// packed and nothing is allocated. Anything unusual is left to the slow path.

const (
	hdrLen = 12

	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagCD = 1 << 4

	// maxUDP is the largest UDP response we send whatever the client
	// advertises: the DNS flag day 2020 size, which avoids IP fragmentation.
	maxUDP = 1232
)

var (
	reverse4 = []byte("\x07in-addr\x04arpa\x00")
	reverse6 = []byte("\x03ip6\x04arpa\x00")
	podLabel = []byte("\x03pod")
)

// query is the parsed question of a simple query. It lives on the stack.
type query struct {
	nameEnd  int // offset of QTYPE in the request
	qtype    uint16
	qclass   uint16
	key      [255]byte // lowercased wire name
	keyLen   int
	labels   [128]uint8 // offset in key of each label
	nlabels  int
	edns     bool
	udpSize  uint16
	reqFlags uint16
}

// parse accepts only what the hot path answers: a QUERY with one question,
// no answer or authority records and at most an EDNS0 version 0 OPT record.
func (q *query) parse(req []byte) bool {
	if len(req) < hdrLen {
		return false
	}
	q.reqFlags = binary.BigEndian.Uint16(req[2:])
	if q.reqFlags&flagQR != 0 || (q.reqFlags>>11)&0xF != dns.OpcodeQuery {
		return false
	}
	if binary.BigEndian.Uint16(req[4:]) != 1 || binary.BigEndian.Uint16(req[6:]) != 0 ||
		binary.BigEndian.Uint16(req[8:]) != 0 || binary.BigEndian.Uint16(req[10:]) > 1 {
		return false
	}
	off, k := hdrLen, 0
	for {
		if off >= len(req) {
			return false
		}
		l := int(req[off])
		if l == 0 {
			break
		}
		// l > 63 is a compression pointer or an obsolete label type.
		if l > 63 || off+1+l > len(req) || k+1+l >= len(q.key) {
			return false
		}
		q.labels[q.nlabels] = uint8(k)
		q.nlabels++
		q.key[k] = byte(l)
		for i, c := range req[off+1 : off+1+l] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			q.key[k+1+i] = c
		}
		k += 1 + l
		off += 1 + l
	}
	q.key[k] = 0
	q.keyLen = k + 1
	off++
	if off+4 > len(req) {
		return false
	}
	q.nameEnd = off
	q.qtype = binary.BigEndian.Uint16(req[off:])
	q.qclass = binary.BigEndian.Uint16(req[off+2:])
	off += 4
	if binary.BigEndian.Uint16(req[10:]) == 1 {
		return q.parseOPT(req[off:])
	}
	return true
}

// parseOPT reads the EDNS0 record. Options (cookies, padding) are ignored, as
// RFC 6891 and RFC 7873 allow for a server that does not implement them.
func (q *query) parseOPT(b []byte) bool {
	if len(b) < 11 || b[0] != 0 || binary.BigEndian.Uint16(b[1:]) != dns.TypeOPT {
		return false
	}
	if b[6] != 0 { // EDNS version: anything but 0 gets BADVERS from the slow path
		return false
	}
	if 11+int(binary.BigEndian.Uint16(b[9:])) > len(b) {
		return false
	}
	q.edns = true
	q.udpSize = binary.BigEndian.Uint16(b[3:])
	return true
}

// name returns the lowercased wire name.
func (q *query) name() []byte { return q.key[:q.keyLen] }

// under reports whether the name ends in suffix (a wire name with labels
// labels) at a label boundary.
func (q *query) under(suffix []byte, labels int) bool {
	if q.nlabels < labels || !bytes.HasSuffix(q.name(), suffix) {
		return false
	}
	return labels == q.nlabels || int(q.labels[q.nlabels-labels]) == q.keyLen-len(suffix)
}

// label returns label i without its length byte.
func (q *query) label(i int) []byte {
	s := int(q.labels[i])
	return q.key[s+1 : s+1+int(q.key[s])]
}

// verdict is what the hot path decided.
type verdict int

const (
	slowPath verdict = iota // the slow path must answer
	answered
)

// answer writes the response to req into out[:0] and returns it with its
// rcode. maxSize is the transport's limit (65535 on TCP).
func (z *zone) answer(req []byte, q *query, out []byte, maxSize int) ([]byte, int, verdict) {
	if q.qclass != dns.ClassINET || q.qtype == dns.TypeAXFR || q.qtype == dns.TypeIXFR {
		return nil, 0, slowPath
	}
	if q.under(z.key, z.labels) {
		// A pod name's record comes from the question: it is built in
		// this stack buffer, so that answering it allocates nothing either.
		var pod [28]byte
		b := z.find(q, pod[:0])
		if b.rcode < 0 {
			return nil, 0, slowPath
		}
		return write(out, req, q, flagAA, &b, maxSize), b.rcode, answered
	}
	if q.qtype == dns.TypePTR && (q.under(reverse4, 2) || q.under(reverse6, 2)) {
		if e := z.names[string(q.name())]; e != nil {
			if b := e.lookup(dns.TypePTR); b != nil {
				return write(out, req, q, flagAA, b, maxSize), b.rcode, answered
			}
		}
	}
	return nil, 0, slowPath
}

// find returns the body for an in-zone question; rcode -1 means the slow
// path must answer. A pod name's answer is appended to pod.
func (z *zone) find(q *query, pod []byte) body {
	e := z.names[string(q.name())]
	if e == nil {
		if ip, ok := z.podName(q); ok {
			return z.podAnswer(q, ip, pod)
		}
		return z.nxdomain
	}
	if b := e.lookup(q.qtype); b != nil {
		return *b
	}
	if e.alias {
		return body{rcode: -1}
	}
	return z.nodata
}

// podName matches a-b-c-d.<ns>.pod.<zone>.
func (z *zone) podName(q *query) ([16]byte, bool) {
	var ip [16]byte
	if q.nlabels != z.labels+3 || !bytes.Equal(q.key[q.labels[2]:q.labels[3]], podLabel) {
		return ip, false
	}
	addr, ok := records.PodIP(q.label(0))
	if !ok {
		return ip, false
	}
	return addr.As16(), true
}

// podAnswer builds the one A or AAAA record of a pod name into buf.
func (z *zone) podAnswer(q *query, ip [16]byte, buf []byte) body {
	is4 := isV4(ip)
	want := uint16(dns.TypeAAAA)
	rdata := ip[:]
	if is4 {
		want, rdata = dns.TypeA, ip[12:]
	}
	if q.qtype != want && q.qtype != dns.TypeANY {
		return z.nodata
	}
	rr := append(buf, 0xC0, 0x0C)
	rr = binary.BigEndian.AppendUint16(rr, want)
	rr = binary.BigEndian.AppendUint16(rr, dns.ClassINET)
	rr = binary.BigEndian.AppendUint32(rr, z.ttl)
	rr = binary.BigEndian.AppendUint16(rr, uint16(len(rdata)))
	return body{an: 1, b: append(rr, rdata...)}
}

func isV4(ip [16]byte) bool {
	for _, c := range ip[:10] {
		if c != 0 {
			return false
		}
	}
	return ip[10] == 0xFF && ip[11] == 0xFF
}

// udpLimit is the response size a UDP client can take.
func (q *query) udpLimit() int {
	if !q.edns || q.udpSize < 512 {
		return 512
	}
	return min(int(q.udpSize), maxUDP)
}

// write assembles header, question, body and OPT. A response over maxSize
// is sent truncated (TC, no records) so the client retries over TCP.
func write(out, req []byte, q *query, flags uint16, b *body, maxSize int) []byte {
	qEnd := q.nameEnd + 4
	size := qEnd + len(b.b)
	if q.edns {
		size += 11
	}
	an, ns, ar := b.an, b.ns, b.ar
	if size > maxSize {
		flags |= flagTC
		an, ns, ar = 0, 0, 0
	}
	flags |= flagQR | flagRA | q.reqFlags&(flagRD|flagCD) | uint16(b.rcode&0xF)
	if q.edns {
		ar++
	}
	out = append(out[:0], req[0], req[1])
	out = binary.BigEndian.AppendUint16(out, flags)
	out = binary.BigEndian.AppendUint16(out, 1)
	out = binary.BigEndian.AppendUint16(out, an)
	out = binary.BigEndian.AppendUint16(out, ns)
	out = binary.BigEndian.AppendUint16(out, ar)
	out = append(out, req[hdrLen:qEnd]...)
	if flags&flagTC == 0 {
		out = append(out, b.b...)
	}
	if q.edns {
		// Root owner, TYPE OPT, CLASS = our UDP size, TTL 0 (no extended
		// rcode, version 0, DO clear: we do not sign), no options.
		out = append(out, 0, 0, byte(dns.TypeOPT), byte(maxUDP>>8), byte(maxUDP&0xFF), 0, 0, 0, 0, 0, 0)
	}
	return out
}
