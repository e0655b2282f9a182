package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// seeds are plain requests and the smuggling and framing cases the lean
// path must leave to net/http.
var seeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /p/a.th?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
	"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	"GET /a%2Fb HTTP/1.1\r\nHost: a\r\nx-lower: v\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET /x? HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	"GET /!*'() HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
	"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 1\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
	"G\x7fT / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nPragma: x\r\nPragma: no-cache\r\n\r\n",
	"GET /\xff HTTP/1.1\r\nHost: a\r\nX: \xff\r\n\r\n",
}

func FuzzParse(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		compare(t, data)
	})
}

// TestAgreesWithNetHTTP runs the fuzz comparison on the seeds, so every
// go test checks them.
func TestAgreesWithNetHTTP(t *testing.T) {
	for _, s := range seeds {
		compare(t, []byte(s))
	}
}

// compare checks that a head the lean parser accepts is one net/http's
// server accepts with the same meaning: same method, target, version,
// Host, fields, framing and length, and connection persistence.
func compare(t *testing.T, data []byte) {
	t.Helper()
	n, _, err := End(data, 0)
	if err != nil || n == 0 {
		return // deferred, or not complete: net/http decides
	}
	var h Head
	if err := Parse(data[:n], &h); err != nil {
		if !errors.Is(err, ErrDefer) {
			t.Fatalf("Parse(%q): %v, want nil or ErrDefer", data, err)
		}
		return
	}
	cr := &countingReader{r: bytes.NewReader(data)}
	br := bufio.NewReader(cr)
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Fatalf("lean path accepted %q; net/http refuses it: %v", data, err)
	}
	if consumed := cr.n - br.Buffered(); consumed != n {
		t.Fatalf("%q: head of %d bytes, net/http read %d", data, n, consumed)
	}
	// what net/http's server checks beyond ReadRequest
	// (ReadRequest moves the Host field to req.Host and refuses two; a
	// missing one in HTTP/1.1 is in TestDefers, as ReadRequest cannot tell
	// it from an empty one)
	if !httpguts.ValidHostHeader(req.Host) {
		t.Fatalf("lean path accepted %q; net/http's server refuses its Host", data)
	}
	for k, vv := range req.Header {
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
				t.Fatalf("lean path accepted %q; net/http's server refuses field %q: %q", data, k, v)
			}
		}
	}
	got := http.Header{}
	for _, f := range h.Fields {
		got[f.Name] = append(got[f.Name], f.Value)
	}
	if len(got) == 0 {
		got = http.Header{}
	}
	checks := []struct {
		name      string
		lean, std any
	}{
		{"method", h.Method, req.Method},
		{"request URI", h.RequestURI, req.RequestURI},
		{"proto", h.Proto(), req.Proto},
		{"minor", h.ProtoMinor, req.ProtoMinor},
		{"URL", h.URL, *req.URL},
		{"host", h.Host, req.Host},
		{"header", got, req.Header},
		{"content length", h.ContentLength, req.ContentLength},
		{"transfer encoding", []string(nil), req.TransferEncoding},
		{"close", h.Close, req.Close},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.lean, c.std) {
			t.Fatalf("%q: %s: lean %#v, net/http %#v", data, c.name, c.lean, c.std)
		}
	}
	// the body is the next ContentLength bytes, as net/http reads it
	if rest := data[n:]; int64(len(rest)) >= h.ContentLength {
		b, err := io.ReadAll(req.Body)
		if err != nil || !bytes.Equal(b, rest[:h.ContentLength]) {
			t.Fatalf("%q: body %q (%v), lean path reads %q", data, b, err, rest[:h.ContentLength])
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// The lean path serves none of the ambiguous or malformed heads; each
// goes to net/http, which refuses it (see ingress/proxy's smuggling test
// for the answers clients get).
func TestDefers(t *testing.T) {
	for _, c := range []struct{ name, head string }{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"},
		{"TE alone", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"differing CLs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"},
		{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n"},
		{"signed CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n"},
		{"huge CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n"},
		{"bare CR", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"},
		{"no Host", "GET / HTTP/1.1\r\n\r\n"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"},
		{"absolute form", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\n"},
		{"HTTP/2.0 line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n"},
		{"HTTP/0.9 style", "GET /\r\n\r\n"},
		{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"upgrade", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"h2c upgrade", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"},
		{"expect", "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n"},
		{"bad escape", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"control in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := []byte(c.head)
			n, _, err := End(b, 0)
			if err == nil && n > 0 {
				var h Head
				err = Parse(b[:n], &h)
			}
			if !errors.Is(err, ErrDefer) {
				t.Errorf("%q: %v, want ErrDefer", c.head, err)
			}
		})
	}
}

func TestEndBareLF(t *testing.T) {
	for _, s := range []string{"GET / HTTP/1.1\nHost: a\n\n", "GET / HTTP/1.1\r\nHost: a\n\r\n", "\r\nGET / HTTP/1.1\r\n\r\n"} {
		if _, _, err := End([]byte(s), 0); !errors.Is(err, ErrDefer) {
			t.Errorf("End(%q) = %v, want ErrDefer", s, err)
		}
	}
	if n, _, err := End([]byte("GET / HTTP/1.1\r\nHost: a\r\n"), 0); n != 0 || err != nil {
		t.Errorf("incomplete head: %d, %v; want 0, nil", n, err)
	}
}

// A head that arrives a byte at a time is found where a whole one is,
// resuming each scan where the last one stopped.
func TestEndResumes(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nGET /next"
	want, _, _ := End([]byte(head), 0)
	from := 0
	for i := 1; i <= len(head); i++ {
		n, next, err := End([]byte(head[:i]), from)
		if err != nil {
			t.Fatalf("at %d: %v", i, err)
		}
		if n > 0 {
			if n != want || i != want {
				t.Fatalf("found a head of %d bytes after %d bytes; want %d after %d", n, i, want, want)
			}
			return
		}
		if next < from {
			t.Fatalf("at %d: resume point went back from %d to %d", i, from, next)
		}
		from = next
	}
	t.Fatal("no head found")
}

func TestParseFields(t *testing.T) {
	raw := "GET /a/b?q=1 HTTP/1.1\r\nHost: Example.com\r\nuser-agent:  wrk \r\nX-Custom-header: v\r\nCookie: a\r\ncookie: b\r\n\r\n"
	var h Head
	if err := Parse([]byte(raw), &h); err != nil {
		t.Fatal(err)
	}
	want := []Field{{"User-Agent", "wrk"}, {"X-Custom-Header", "v"}, {"Cookie", "a"}, {"Cookie", "b"}}
	if !reflect.DeepEqual(h.Fields, want) || h.Host != "Example.com" || h.URL.Path != "/a/b" || h.URL.RawQuery != "q=1" {
		t.Errorf("parsed %+v", h)
	}
	// Parsing into a used Head leaves nothing of the previous request.
	if err := Parse([]byte("POST /x HTTP/1.0\r\nContent-Length: 2\r\n\r\n"), &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Fields) != 1 || h.Host != "" || h.ContentLength != 2 || !h.Close || h.URL.RawQuery != "" {
		t.Errorf("reused head: %+v", h)
	}
}

// The common head costs one allocation (the string all fields share).
func TestParseAllocations(t *testing.T) {
	raw := []byte("GET /api/v1/items?id=7 HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: wrk\r\naccept: */*\r\n\r\n")
	var h Head
	if a := testing.AllocsPerRun(100, func() {
		if err := Parse(raw, &h); err != nil {
			t.Fatal(err)
		}
	}); a > 1 {
		t.Errorf("%v allocations per head, want 1", a)
	}
}
