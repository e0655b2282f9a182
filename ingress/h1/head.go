// Package h1 parses HTTP/1.x request heads for the ingress proxy's lean
// server path. It accepts only the plain, unambiguous heads that make up
// nearly all keep-alive traffic and answers ErrDefer for everything else,
// which the caller hands to net/http unchanged. So the parser never has to
// refuse a request itself: a head it accepts is one net/http accepts with
// the same meaning (the fuzz test checks exactly that), and a head it does
// not accept gets net/http's own answer, byte for byte. That is what keeps
// request smuggling out: the lean path never guesses about framing.
package h1

import (
	"bytes"
	"errors"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// ErrDefer says the head is not one the lean path serves: an upgrade, h2c,
// Expect, a Transfer-Encoding, an absolute or asterisk target, anything
// malformed or merely unusual. net/http decides about it.
var ErrDefer = errors.New("h1: head left to net/http")

// MaxFields bounds the header fields of a head the lean path serves; heads
// with more go to net/http, which has its own limits.
const MaxFields = 100

// Field is one header field. Name is in canonical form (as
// http.CanonicalHeaderKey returns it); Value has surrounding blanks trimmed.
type Field struct {
	Name, Value string
}

// Head is a parsed request head. Its strings are substrings of one copy
// of the head's bytes, so parsing costs one allocation (plus one per
// header name that was not sent in canonical form and is not a common one).
// A Head is reused from request to request: Parse overwrites all of it.
type Head struct {
	Method     string
	RequestURI string
	ProtoMinor int // 0 or 1: HTTP/1.0 or HTTP/1.1
	URL        url.URL
	// Host is the Host field, which is not among Fields (as net/http
	// moves it from Request.Header to Request.Host).
	Host   string
	Fields []Field
	// ContentLength is the body's length; 0 when none was announced.
	ContentLength int64
	// Close is set when the client asked to close the connection after
	// this exchange, or did not ask to keep an HTTP/1.0 one.
	Close bool
}

// Proto returns "HTTP/1.1" or "HTTP/1.0".
func (h *Head) Proto() string {
	if h.ProtoMinor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// End returns the length of the head at the start of b (through the empty
// line), or 0 when b does not yet hold a complete head, or ErrDefer as soon
// as a line ends in a bare LF: net/http tolerates some of those, and a
// head that does not end in CRLF CRLF would otherwise make the caller wait
// for bytes that never come.
//
// from is where to resume: 0 for a new head, else the next End returned
// for a shorter b holding the same head. Resuming keeps a client that
// sends its head a byte at a time from making the scan quadratic.
func End(b []byte, from int) (n, next int, err error) {
	start := from
	for {
		i := bytes.IndexByte(b[start:], '\n')
		if i < 0 {
			return 0, start, nil
		}
		i += start
		if i == 0 || b[i-1] != '\r' {
			return 0, 0, ErrDefer
		}
		if i == start+1 && start > 0 {
			return i + 1, 0, nil
		}
		if i == 1 {
			// an empty line before the request line: net/http skips
			// those; the lean path does not bother.
			return 0, 0, ErrDefer
		}
		start = i + 1
	}
}

// Parse parses the complete head in b (as End measured it) into h. It
// returns ErrDefer for any head the lean path leaves to net/http.
func Parse(b []byte, h *Head) error {
	// One string for the whole head; every field is a substring of it.
	s := string(b)
	fields := h.Fields[:0]
	*h = Head{}
	h.Fields = fields

	eol := strings.Index(s, "\r\n")
	if eol < 0 {
		return ErrDefer
	}
	if err := h.requestLine(s[:eol]); err != nil {
		return err
	}
	s = s[eol+2:]
	var hosts, lengths, pragmas int
	keepAlive, noCache, cacheControl := false, false, false
	for {
		eol = strings.Index(s, "\r\n")
		if eol < 0 {
			return ErrDefer
		}
		line := s[:eol]
		s = s[eol+2:]
		if line == "" {
			break
		}
		f, err := field(line)
		if err != nil {
			return err
		}
		switch f.Name {
		case "Host":
			hosts++
			h.Host = f.Value
			continue
		case "Content-Length":
			lengths++
			n, ok := parseLength(f.Value)
			if !ok {
				return ErrDefer
			}
			h.ContentLength = n
		case "Connection":
			v := [1]string{f.Value}
			if httpguts.HeaderValuesContainsToken(v[:], "close") {
				h.Close = true
			}
			if httpguts.HeaderValuesContainsToken(v[:], "keep-alive") {
				keepAlive = true
			}
		case "Pragma":
			if pragmas == 0 {
				noCache = f.Value == "no-cache"
			}
			pragmas++
		case "Cache-Control":
			cacheControl = true
		case "Transfer-Encoding", "Expect", "Upgrade", "Http2-Settings", "Te":
			// framing, upgrades and h2c, 100-continue, and TE (which
			// comes with rules for what is relayed) are net/http's to
			// handle.
			return ErrDefer
		}
		if len(h.Fields) == MaxFields {
			return ErrDefer
		}
		h.Fields = append(h.Fields, f)
	}
	// net/http takes identical repeated lengths; rare enough to leave to it.
	if lengths > 1 || hosts > 1 {
		return ErrDefer
	}
	if hosts == 0 && h.ProtoMinor == 1 {
		return ErrDefer // net/http answers 400
	}
	if hosts == 1 && !httpguts.ValidHostHeader(h.Host) {
		return ErrDefer
	}
	if h.ProtoMinor == 0 && !h.Close {
		h.Close = !keepAlive
	}
	if noCache && !cacheControl {
		// HTTP/1.0's Pragma: no-cache means Cache-Control: no-cache,
		// which net/http adds (RFC 9111 5.4); so does the lean path.
		if len(h.Fields) == MaxFields {
			return ErrDefer
		}
		h.Fields = append(h.Fields, Field{Name: "Cache-Control", Value: "no-cache"})
	}
	return nil
}

// requestLine parses "METHOD /origin-form HTTP/1.x".
func (h *Head) requestLine(line string) error {
	sp := strings.IndexByte(line, ' ')
	if sp <= 0 {
		return ErrDefer
	}
	h.Method = line[:sp]
	for i := 0; i < len(h.Method); i++ {
		if !httpguts.IsTokenRune(rune(h.Method[i])) {
			return ErrDefer
		}
	}
	if h.Method == "PRI" || h.Method == "CONNECT" {
		return ErrDefer // the h2 preface; tunnels
	}
	rest := line[sp+1:]
	sp = strings.IndexByte(rest, ' ')
	if sp <= 0 {
		return ErrDefer
	}
	h.RequestURI = rest[:sp]
	switch rest[sp+1:] {
	case "HTTP/1.1":
		h.ProtoMinor = 1
	case "HTTP/1.0":
		h.ProtoMinor = 0
	default:
		return ErrDefer
	}
	return h.target()
}

// target fills URL from RequestURI. Plain paths, the bulk of traffic,
// are split without allocating; anything with escapes or characters
// url.URL would escape again goes through url.ParseRequestURI, which is
// what net/http uses.
func (h *Head) target() error {
	t := h.RequestURI
	if t[0] != '/' {
		return ErrDefer // absolute-form, asterisk-form
	}
	q := -1
	for i := 0; i < len(t); i++ {
		c := t[i]
		if q < 0 {
			if c == '?' {
				q = i
				continue
			}
			if !pathByte(c) {
				return h.slowTarget()
			}
			continue
		}
		if c <= ' ' || c >= 0x7f {
			return h.slowTarget()
		}
	}
	h.URL = url.URL{Path: t}
	if q >= 0 {
		h.URL.Path, h.URL.RawQuery = t[:q], t[q+1:]
		h.URL.ForceQuery = q == len(t)-1
	}
	return nil
}

func (h *Head) slowTarget() error {
	u, err := url.ParseRequestURI(h.RequestURI)
	if err != nil {
		return ErrDefer
	}
	h.URL = *u
	return nil
}

// pathByte reports whether c stands for itself in url.URL's Path and
// EscapedPath both, so the raw path is the path.
func pathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', '~', '$', '&', '+', ',', '/', ':', ';', '=', '@':
		return true
	}
	return false
}

// field parses "Name: value". The name must be a token right up to the
// colon (no blank before it, as RFC 9112 5.1 asks); the value may hold
// visible characters, blanks and obs-text, never controls. A line
// starting with a blank (obs-fold) is deferred, since the name would be
// empty.
func field(line string) (Field, error) {
	colon := strings.IndexByte(line, ':')
	if colon <= 0 {
		return Field{}, ErrDefer
	}
	name := line[:colon]
	for i := 0; i < len(name); i++ {
		if !httpguts.IsTokenRune(rune(name[i])) {
			return Field{}, ErrDefer
		}
	}
	v := line[colon+1:]
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return Field{}, ErrDefer
		}
	}
	return Field{Name: canonical(name), Value: trim(v)}, nil
}

func trim(s string) string {
	i, j := 0, len(s)
	for i < j && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	for j > i && (s[j-1] == ' ' || s[j-1] == '\t') {
		j--
	}
	return s[i:j]
}

// parseLength parses a Content-Length value: digits only, as net/http
// wants, and small enough never to overflow.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
