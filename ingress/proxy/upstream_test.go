package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffnet/skiff/ingress/routes"
)

// countingBackend serves h and counts the connections it accepted.
func countingBackend(t *testing.T, h http.HandlerFunc) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int32)
	s := &http.Server{Handler: h, ConnState: func(_ net.Conn, cs http.ConnState) {
		if cs == http.StateNew {
			conns.Add(1)
		}
	}}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String(), conns
}

func newTestLean() *leanClient {
	return newLeanClient(&net.Dialer{Timeout: time.Second}, 8, time.Minute)
}

func leanGet(t *testing.T, c *leanClient, r *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.RoundTrip(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	resp.Body.Close()
	return resp, string(b)
}

func TestLeanReusesConnections(t *testing.T) {
	addr, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Method, r.URL.RequestURI())
	})
	c := newTestLean()
	defer c.closeIdle()
	for i := 0; i < 10; i++ {
		r, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/x?i=%d", addr, i), nil)
		if _, body := leanGet(t, c, r); body != fmt.Sprintf("GET /x?i=%d", i) {
			t.Fatalf("body %q", body)
		}
	}
	// HEAD and 204 answers have no body: the connection goes back at once.
	r, _ := http.NewRequest(http.MethodHead, "http://"+addr+"/", nil)
	leanGet(t, c, r)
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 11 sequential requests, want 1", n)
	}
}

func TestLeanBodyNotDrainedNotReused(t *testing.T) {
	addr, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 100<<10)))
	})
	c := newTestLean()
	defer c.closeIdle()
	r, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	resp, err := c.RoundTrip(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close() // most of the body is still on the wire
	leanGet(t, c, r)
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: a connection with unread body bytes must not be reused", n)
	}
}

// rawBackend answers the nth connection with the nth script: for every
// request read, the next answer, where "" means close the connection
// without answering; at the end of its script it closes the connection.
func rawBackend(t *testing.T, scripts ...[]string) (addr string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for _, script := range scripts {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go serveScript(c, script)
		}
	}()
	return ln.Addr().String(), accepted
}

func serveScript(c net.Conn, script []string) {
	defer c.Close()
	br := bufio.NewReader(c)
	for _, answer := range script {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, r.Body)
		if answer == "" {
			return
		}
		io.WriteString(c, answer)
	}
	// then hang up
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func TestLeanStaleConnectionRetried(t *testing.T) {
	// The first connection answers once, then closes when the second
	// request arrives: the race a pooled connection can lose.
	addr, accepted := rawBackend(t, []string{okAnswer, ""}, []string{okAnswer, okAnswer})
	c := newTestLean()
	defer c.closeIdle()
	r, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	leanGet(t, c, r)
	if _, body := leanGet(t, c, r); body != "ok" {
		t.Fatalf("retried GET: %q", body)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}

	// A POST the backend may have seen is not sent twice.
	addr, _ = rawBackend(t, []string{okAnswer, ""}, []string{okAnswer})
	r, _ = http.NewRequest(http.MethodPost, "http://"+addr+"/", nil)
	leanGet(t, c, r)
	if _, err := c.RoundTrip(r); err == nil {
		t.Error("POST on a connection the backend closed was retried")
	}
}

func TestLeanClosedIdleConnectionSkipped(t *testing.T) {
	// The backend closes right after its answer; by the next request the
	// peek sees the close and a new connection is used, even for a POST.
	addr, accepted := rawBackend(t, []string{okAnswer}, []string{okAnswer})
	c := newTestLean()
	defer c.closeIdle()
	r, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader("body"))
	leanGet(t, c, r)
	time.Sleep(checkIdleAfter + 20*time.Millisecond)
	r, _ = http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader("body"))
	if _, body := leanGet(t, c, r); body != "ok" {
		t.Fatalf("POST after the backend closed: %q", body)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestLeanChunkedAndTrailers(t *testing.T) {
	addr, _ := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		fmt.Fprintf(w, "te=%v len=%d body=%s trailer=%s", r.TransferEncoding, r.ContentLength, b, r.Trailer.Get("X-Req"))
		w.(http.Flusher).Flush() // no Content-Length: the answer is chunked
		w.Header().Set("X-Sum", "42")
	})
	c := newTestLean()
	defer c.closeIdle()
	pr, pw := io.Pipe()
	r, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/", pr)
	r.ContentLength = -1
	r.Trailer = http.Header{"X-Req": nil}
	go func() {
		pw.Write([]byte("hello "))
		pw.Write([]byte("world"))
		r.Trailer.Set("X-Req", "done") // set before EOF, as a server does
		pw.Close()
	}()
	resp, body := leanGet(t, c, r)
	if want := "te=[chunked] len=-1 body=hello world trailer=done"; body != want {
		t.Errorf("body %q, want %q", body, want)
	}
	if resp.ContentLength != -1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("response not chunked: length %d, %v", resp.ContentLength, resp.TransferEncoding)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "42" {
		t.Errorf("response trailer X-Sum %q, want 42", got)
	}
}

func TestLeanOnlyForPlainExchanges(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := p.lb
	h1 := &routes.Backend{Protocol: routes.HTTP1}
	h2c := &routes.Backend{Protocol: routes.H2C}
	req := func(hdr ...string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	cases := []struct {
		name string
		be   *routes.Backend
		r    *http.Request
		want http.RoundTripper
	}{
		{"plain", h1, req(), b.lean},
		{"websocket", h1, req("Connection", "keep-alive, Upgrade", "Upgrade", "websocket"), b.h1},
		{"websocket to h2c backend", h2c, req("Connection", "upgrade", "Upgrade", "websocket"), b.h1},
		{"Upgrade without Connection", h1, req("Upgrade", "websocket"), b.lean},
		{"h2c", h2c, req(), b.h2c},
		{"expect", h1, req("Expect", "100-continue"), b.h1},
	}
	for _, c := range cases {
		if got := b.transport(c.be, c.r); got != c.want {
			t.Errorf("%s: got %T %p, want %p", c.name, got, got, c.want)
		}
	}
}

func TestForwardHopByHop1xxAndTrailers(t *testing.T) {
	be := startBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		fmt.Fprintf(w, "secret=%q te=%q conn=%q", r.Header.Get("X-Secret"), r.Header.Get("Te"), r.Header.Get("Connection"))
		w.Header().Set("X-Sum", "7")
	}), false)
	var wd world
	wd.service("a", "", be.addr)
	wd.ingress("ia", "foo.example.com", "/", "a")
	p := startProxy(t, Options{}, wd.table(t))
	var early int
	r, _ := http.NewRequest(http.MethodGet, p.httpURL+"/", nil)
	r.Host = "foo.example.com"
	r.Header.Set("Connection", "X-Secret")
	r.Header.Set("X-Secret", "s")
	r.Header.Set("Te", "trailers")
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusEarlyHints && h.Get("Link") != "" {
				early++
			}
			return nil
		},
	}))
	resp, err := plainClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `secret="" te="trailers" conn=""`; string(b) != want {
		t.Errorf("backend saw %s, want %s", b, want)
	}
	if resp.Header.Get("X-Hop") != "" {
		t.Error("X-Hop, named by the backend's Connection header, was forwarded")
	}
	if resp.Trailer.Get("X-Sum") != "7" {
		t.Errorf("trailer X-Sum %q, want 7", resp.Trailer.Get("X-Sum"))
	}
	if early != 1 {
		t.Errorf("%d 103 responses with Link reached the client, want 1", early)
	}
}
