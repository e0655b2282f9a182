package h1server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// served starts a Server on loopback whose lean handler and fallback
// handler say which of them answered, and the body they read.
func served(t *testing.T, lean http.HandlerFunc) (*Server, string) {
	t.Helper()
	if lean == nil {
		lean = func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "lean %s %s %s body=%s", r.Method, r.RequestURI, r.Proto, b)
		}
	}
	fb := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "fallback %s %s %s body=%s", r.Method, r.RequestURI, r.Proto, b)
	})}
	s := New(Config{Handler: lean, Fallback: fb, MaxHeaderBytes: 4096,
		ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve: %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, raw); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next response on the connection with its body.
func (c *client) read(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the server closed the connection.
func (c *client) closed() bool {
	c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.br.ReadByte()
	return err == io.EOF
}

func TestKeepAlive(t *testing.T) {
	_, addr := served(t, nil)
	c := dial(t, addr)
	for i := range 3 {
		c.send(fmt.Sprintf("GET /r%d HTTP/1.1\r\nHost: h\r\n\r\n", i))
		resp, body := c.read("GET")
		if want := fmt.Sprintf("lean GET /r%d HTTP/1.1 body=", i); body != want || resp.Close {
			t.Errorf("request %d: %q (close %v), want %q on a kept connection", i, body, resp.Close, want)
		}
		if resp.ContentLength != int64(len(body)) || resp.Header.Get("Date") == "" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("request %d: framing or default fields missing: %v", i, resp.Header)
		}
	}
}

func TestPipelining(t *testing.T) {
	_, addr := served(t, nil)
	c := dial(t, addr)
	c.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" +
		"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n" +
		"GET /d HTTP/1.1\r\nHost: h\r\n\r\n")
	for _, want := range []struct{ method, body string }{
		{"GET", "lean GET /a HTTP/1.1 body="},
		{"POST", "lean POST /b HTTP/1.1 body=hello"},
		{"HEAD", ""},
		{"GET", "lean GET /d HTTP/1.1 body="},
	} {
		if _, body := c.read(want.method); body != want.body {
			t.Errorf("%s: %q, want %q", want.method, body, want.body)
		}
	}
}

func TestConnectionClose(t *testing.T) {
	_, addr := served(t, nil)
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, body := c.read("GET")
	if !resp.Close || body != "lean GET / HTTP/1.1 body=" {
		t.Errorf("%q close=%v, want an answer with Connection: close", body, resp.Close)
	}
	if !c.closed() {
		t.Error("connection still open after Connection: close")
	}
}

func TestHTTP10(t *testing.T) {
	_, addr := served(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part1 ")
		if r.URL.Path == "/stream" {
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "part2")
	})
	t.Run("default close", func(t *testing.T) {
		c := dial(t, addr)
		c.send("GET / HTTP/1.0\r\n\r\n")
		resp, body := c.read("GET")
		if body != "part1 part2" || !resp.Close || !c.closed() {
			t.Errorf("%q close=%v: want the body and the connection closed", body, resp.Close)
		}
	})
	t.Run("keep-alive", func(t *testing.T) {
		c := dial(t, addr)
		for range 2 {
			c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			resp, body := c.read("GET")
			if body != "part1 part2" || resp.Close || resp.Header.Get("Connection") != "keep-alive" {
				t.Fatalf("%q %v: want a kept HTTP/1.0 connection", body, resp.Header)
			}
		}
	})
	t.Run("stream ends with the connection", func(t *testing.T) {
		c := dial(t, addr)
		c.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp, body := c.read("GET")
		if body != "part1 part2" || resp.ContentLength != -1 || !resp.Close {
			t.Errorf("%q length %d: want a body delimited by the close", body, resp.ContentLength)
		}
	})
}

func TestChunkedAndTrailers(t *testing.T) {
	_, addr := served(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, strings.Repeat("a", 3000)) // past what is held back
		w.(http.Flusher).Flush()
		io.WriteString(w, "b")
		w.Header().Set("X-Sum", "3001")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	})
	c := dial(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, body := c.read("GET")
	if len(body) != 3001 || resp.TransferEncoding == nil || resp.Trailer.Get("X-Sum") != "3001" || resp.Trailer.Get("X-Late") != "yes" {
		t.Errorf("body %d bytes, TE %v, trailers %v", len(body), resp.TransferEncoding, resp.Trailer)
	}
	c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n") // the connection is still in step
	if _, body := c.read("GET"); len(body) != 3001 {
		t.Errorf("second response: %d bytes", len(body))
	}
}

// Requests the lean path does not serve reach the fallback on the same
// connection, after lean ones, and the answers stay in order.
func TestHandOff(t *testing.T) {
	_, addr := served(t, nil)
	for _, c := range []struct{ name, req, want string }{
		{"chunked body", "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "fallback POST /c HTTP/1.1 body=abc"},
		{"expect", "PUT /e HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx", "fallback PUT /e HTTP/1.1 body=x"},
		{"absolute target", "GET http://h/abs HTTP/1.1\r\nHost: h\r\n\r\n", "fallback GET http://h/abs HTTP/1.1 body="},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := dial(t, addr)
			cl.send("GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
			if _, body := cl.read("GET"); body != "lean GET /first HTTP/1.1 body=" {
				t.Fatalf("first request: %q", body)
			}
			cl.send(c.req)
			resp, body := cl.read("GET")
			if resp.StatusCode == http.StatusContinue {
				resp, body = cl.read("GET")
			}
			if body != c.want {
				t.Errorf("%q, want %q", body, c.want)
			}
			// net/http keeps serving the connection
			cl.send("GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
			if _, body := cl.read("GET"); body != "fallback GET /after HTTP/1.1 body=" {
				t.Errorf("after hand-off: %q", body)
			}
		})
	}
}

// An idle keep-alive connection holds no buffer: the reason idle
// connections cost little memory. A busy one does.
func TestIdleHoldsNoBuffers(t *testing.T) {
	release := make(chan struct{})
	s, addr := served(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	waitFor := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for s.buffers.Load() != want {
			if time.Now().After(deadline) {
				t.Fatalf("connections hold %d buffers, want %d", s.buffers.Load(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	c := dial(t, addr)
	c.send("GET /wait HTTP/1.1\r\nHost: h\r\n\r\n")
	waitFor(2) // read and write buffer while the handler runs
	close(release)
	c.read("GET")
	waitFor(0)
	c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n") // and it still serves
	if _, body := c.read("GET"); body != "ok" {
		t.Errorf("after idling: %q", body)
	}
}

// Shutdown closes idle connections and lets a request in flight finish.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s, addr := served(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	})
	idle := dial(t, addr)
	idle.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	idle.read("GET")
	busy := dial(t, addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	<-started
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if !idle.closed() {
		t.Error("idle connection not closed by Shutdown")
	}
	close(release)
	resp, body := busy.read("GET")
	if body != "done" || !resp.Close {
		t.Errorf("in-flight request: %q close=%v, want it answered and the connection closed", body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// ReadHeaderTimeout bounds the head only: a body that arrives slowly is
// still read (as net/http does without a ReadTimeout).
func TestSlowBodyOutlivesHeaderTimeout(t *testing.T) {
	fb := &http.Server{Handler: http.NotFoundHandler()}
	s := New(Config{Fallback: fb, MaxHeaderBytes: 4096, ReadHeaderTimeout: 500 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %v", b, err)
		})})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	c := dial(t, ln.Addr().String())
	c.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab")
	time.Sleep(1200 * time.Millisecond) // well past ReadHeaderTimeout
	c.send("cd")
	if _, body := c.read("POST"); body != "abcd <nil>" {
		t.Errorf("body read as %q, want abcd without error", body)
	}
}
