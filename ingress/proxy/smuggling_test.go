package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every ambiguous or malformed request gets the answers net/http gives
// on the same bytes, and no request hidden in one reaches a backend.
// The reference is a plain net/http server with the proxy's limits.
func TestSmugglingRefusedAsNetHTTP(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	be := startBackend(t, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, r.URL.Path)
		mu.Unlock()
		io.WriteString(w, "ok")
	}), false)
	var w world
	w.service("a", "", be.addr)
	w.ingress("a", "", "/", "a")
	p := startProxy(t, Options{MaxHeaderBytes: 4096, ReadHeaderTimeout: 2 * time.Second}, w.table(t))
	proxyAddr := strings.TrimPrefix(p.httpURL, "http://")

	ref := &http.Server{
		MaxHeaderBytes:    4096,
		ReadHeaderTimeout: 2 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			io.WriteString(w, "ok")
		}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ref.Serve(ln)
	t.Cleanup(func() { ref.Close() })

	// the hidden request; each case names it after itself (see below)
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
	long := strings.Repeat("x", 8<<10)
	cases := []struct {
		name, raw string
		// badBody: net/http reads the head and fails on the body, so
		// the status depends on the handler; both must refuse
		badBody bool
	}{
		{name: "CL then TE", raw: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "TE then CL", raw: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "TE not chunked last", raw: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "TE obfuscated", raw: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "differing CLs", raw: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd" + smuggled},
		{name: "CL list", raw: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4, 40\r\n\r\nabcd" + smuggled},
		{name: "obs-fold", raw: "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n Content-Length: 40\r\n\r\n" + smuggled},
		{name: "obs-fold of TE", raw: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{name: "bare LF", raw: "GET / HTTP/1.1\nHost: h\nContent-Length: 40\n\n" + smuggled},
		{name: "bare CR", raw: "GET / HTTP/1.1\r\nHost: h\rContent-Length: 40\r\n\r\n" + smuggled},
		{name: "invalid chunk size", raw: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n" + smuggled, badBody: true},
		{name: "chunk size overflow", raw: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n" + smuggled, badBody: true},
		{name: "header too long", raw: "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + long + "\r\n\r\n"},
		{name: "request line too long", raw: "GET /" + long + " HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "NUL in field", raw: "GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n" + smuggled},
	}
	for _, c := range cases {
		hidden := "/smuggled-" + strings.ReplaceAll(c.name, " ", "-")
		c.raw = strings.Replace(c.raw, "/smuggled", hidden, 1)
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			want := answers(t, ln.Addr().String(), c.raw)
			got := answers(t, proxyAddr, c.raw)
			// the backend sees the hidden request only when net/http
			// itself reads it as a request of its own (a second answer)
			mu.Lock()
			reached := slices.Contains(seen, hidden)
			mu.Unlock()
			if reached != (len(want) > 1) {
				t.Errorf("hidden request reached the backend: %v; net/http answered %v", reached, want)
			}
			if len(want) == 0 || want[0] < 400 && !c.badBody {
				t.Logf("net/http accepts this one: %v", want)
			}
			if c.badBody {
				if len(got) == 0 || got[0] < 400 || len(got) > 1 {
					t.Errorf("proxy answered %v, want one refusal (net/http: %v)", got, want)
				}
				return
			}
			if !slices.Equal(got, want) {
				t.Errorf("proxy answered %v, net/http %v", got, want)
			}
		})
	}
}

// answers sends raw on a new connection and returns the status of every
// response until the server closes the connection or goes quiet.
func answers(t *testing.T, addr, raw string) []int {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	var codes []int
	for {
		nc.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return codes
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
}
