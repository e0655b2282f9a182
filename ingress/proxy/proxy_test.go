package proxy

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/ingress/routes"
)

func TestRouting(t *testing.T) {
	a := startBackend(t, "a", nil, false)
	b := startBackend(t, "b", nil, false)
	var w world
	w.service("a", "", a.addr)
	w.service("b", "", b.addr)
	w.service("empty", "")
	w.ingress("ia", "foo.example.com", "/", "a")
	w.ingress("ib", "foo.example.com", "/b", "b")
	w.ingress("ie", "empty.example.com", "/", "empty")
	w.ingress("im", "missing.example.com", "/", "missing")
	p := startProxy(t, Options{}, w.table(t))

	cases := []struct {
		host, path string
		code       int
		body       string
	}{
		{"foo.example.com", "/", 200, "a GET / host=foo.example.com proto=HTTP/1.1 xff=127.0.0.1 xfp=http"},
		{"foo.example.com", "/b/c?q=1", 200, "b GET /b/c?q=1 host=foo.example.com"},
		{"FOO.example.com:80", "/bc", 200, "a GET /bc host=FOO.example.com:80"},
		{"bar.example.com", "/", 404, "no route"},
		{"empty.example.com", "/", 503, "no endpoints"},
		{"missing.example.com", "/", 503, "Service Unavailable"},
	}
	for _, c := range cases {
		code, body, _ := get(t, plainClient, p.httpURL+c.path, c.host)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("%s%s: %d %q, want %d containing %q", c.host, c.path, code, body, c.code, c.body)
		}
	}
	// An X-Forwarded-For from the client is kept and extended.
	_, body, _ := get(t, plainClient, p.httpURL+"/", "foo.example.com", "X-Forwarded-For", "192.0.2.1")
	if !strings.Contains(body, "xff=192.0.2.1, 127.0.0.1") {
		t.Errorf("X-Forwarded-For not appended: %q", body)
	}
}

func TestRoundRobinAndRetry(t *testing.T) {
	a := startBackend(t, "a", nil, false)
	b := startBackend(t, "b", nil, false)
	dead := deadAddr(t)
	var w world
	w.service("web", "", a.addr, dead, b.addr)
	w.ingress("web", "", "/", "web")
	reg := prometheus.NewRegistry()
	p := startProxy(t, Options{Registerer: reg}, w.table(t))

	seen := map[string]int{}
	for i := 0; i < 30; i++ {
		code, body, h := get(t, plainClient, p.httpURL+"/", "x")
		if code != 200 {
			t.Fatalf("request %d: %d %q; a dead endpoint must cost a retry, not an error", i, code, body)
		}
		seen[h.Get("X-Backend")]++
	}
	if seen["a"] < 10 || seen["b"] < 10 {
		t.Errorf("backends got %v, want both about half", seen)
	}
	if got := testutil.ToFloat64(p.metrics.retries); got != 1 {
		t.Errorf("retries = %v, want 1 (the dead endpoint is ejected after its first failure)", got)
	}
	if got := testutil.ToFloat64(p.metrics.ejections); got != 1 {
		t.Errorf("ejections = %v, want 1", got)
	}
}

func TestAllEndpointsDown(t *testing.T) {
	var w world
	w.service("web", "", deadAddr(t), deadAddr(t))
	w.ingress("web", "", "/", "web")
	p := startProxy(t, Options{}, w.table(t))
	for i := 0; i < 3; i++ {
		if code, body, _ := get(t, plainClient, p.httpURL+"/", "x"); code != http.StatusServiceUnavailable {
			t.Errorf("request %d: %d %q, want 503", i, code, body)
		}
	}
}

// Swapping tables while requests are in flight must not fail any of them.
func TestSwapUnderLoad(t *testing.T) {
	a := startBackend(t, "a", nil, false)
	b := startBackend(t, "b", nil, false)
	var w1, w2 world
	w1.service("web", "", a.addr)
	w1.ingress("web", "h", "/", "web")
	w2.service("web", "", b.addr)
	w2.ingress("web", "h", "/", "web")
	w2.ingress("extra", "h", "/extra", "web")
	t1, t2 := w1.table(t), w2.table(t)
	p := startProxy(t, Options{}, t1)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var ok, bad atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r, _ := http.NewRequest("GET", p.httpURL+"/", nil)
				r.Host = "h"
				resp, err := plainClient.Do(r)
				if err != nil || resp.StatusCode != 200 {
					bad.Add(1)
					if err == nil {
						resp.Body.Close()
					}
					continue
				}
				resp.Body.Close()
				ok.Add(1)
			}
		}()
	}
	for i := 0; i < 1000; i++ {
		if i%2 == 0 {
			p.Swap(t2)
		} else {
			p.Swap(t1)
		}
		time.Sleep(200 * time.Microsecond)
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 || ok.Load() < 100 {
		t.Errorf("%d good and %d failed requests across 1000 swaps; want no failure", ok.Load(), bad.Load())
	}
}

func TestTLSBySNIAndHTTP2(t *testing.T) {
	a := startBackend(t, "a", nil, false)
	b := startBackend(t, "b", nil, false)
	var w world
	w.service("a", "", a.addr)
	w.service("b", "", b.addr)
	ia := w.ingress("ia", "a.example.com", "/", "a")
	ib := w.ingress("ib", "b.example.com", "/", "b")
	ia.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "a-tls"}}
	ib.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"b.example.com"}, SecretName: "b-tls"}}
	w.in.Secrets = []*corev1.Secret{tlsSecret(t, "a-tls", "a.example.com"), tlsSecret(t, "b-tls", "b.example.com")}
	p := startProxy(t, Options{}, w.table(t))

	for _, c := range []struct {
		sni  string
		h2   bool
		cert string
		want string
	}{
		{"a.example.com", true, "a.example.com", "a GET / host=a.example.com proto=HTTP/1.1 xff=127.0.0.1 xfp=https"},
		{"b.example.com", false, "b.example.com", "b GET / host=b.example.com"},
		{"other.example.com", true, "a.example.com", "no route"}, // first certificate stands in
	} {
		c := c
		t.Run(c.sni, func(t *testing.T) {
			cl := tlsClient(c.sni, c.h2)
			r, _ := http.NewRequest("GET", "https://"+p.httpsAddr+"/", nil)
			r.Host = c.sni
			resp, err := cl.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			buf.ReadFrom(resp.Body)
			if got := resp.TLS.PeerCertificates[0].DNSNames[0]; got != c.cert {
				t.Errorf("certificate for %s, want %s", got, c.cert)
			}
			if wantProto := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[c.h2]; resp.Proto != wantProto {
				t.Errorf("client spoke %s, want %s (ALPN)", resp.Proto, wantProto)
			}
			if !strings.Contains(buf.String(), c.want) {
				t.Errorf("body %q, want %q", buf.String(), c.want)
			}
		})
	}
}

func TestH2CFromClient(t *testing.T) {
	a := startBackend(t, "a", nil, false)
	var w world
	w.service("a", "", a.addr)
	w.ingress("a", "", "/", "a")
	p := startProxy(t, Options{}, w.table(t))
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	resp, err := (&http.Client{Transport: tr}).Get(p.httpURL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if resp.Proto != "HTTP/2.0" || !strings.Contains(buf.String(), "a GET /x") {
		t.Errorf("h2c: %s %q, want HTTP/2.0 answered by a", resp.Proto, buf.String())
	}
}

func TestBadRequests(t *testing.T) {
	a := startBackend(t, "a", nil, false)
	var w world
	w.service("a", "", a.addr)
	w.ingress("a", "", "/", "a")
	p := startProxy(t, Options{MaxHeaderBytes: 4096, ReadHeaderTimeout: time.Second}, w.table(t))
	addr := strings.TrimPrefix(p.httpURL, "http://")
	big := strings.Repeat("x", 16<<10)
	cases := []struct {
		name, raw string
		want      int
	}{
		{"oversized header", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + big + "\r\n\r\n", 431},
		{"garbage request line", "HELLO THIS IS NOT HTTP\r\n\r\n", 400},
		// shorter than the h2c preface the server peeks for: answered once
		// ReadHeaderTimeout ends the wait, never left hanging
		{"tiny garbage", "HI\r\n\r\n", 400},
		{"bad version", "GET / HTTP/9.9\r\nHost: h\r\n\r\n", 505},
		{"no host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"conflicting content lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"bad content length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400},
		{"unknown transfer encoding", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"bad chunk", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 200 /* status sent before the body is read; see below */},
		{"control char in header", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write([]byte(c.raw)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if c.want == 200 {
				// The proxy streams the body to the backend; a broken chunk
				// makes the exchange fail. It must answer, not hang.
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				if resp.StatusCode < 400 {
					t.Errorf("status %d for a broken chunked body, want an error status", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if resp.StatusCode != c.want {
				t.Errorf("status %d, want %d", resp.StatusCode, c.want)
			}
		})
	}
}

func TestAccessLogAndMetrics(t *testing.T) {
	a := startBackend(t, "a", nil, false)
	var w world
	w.service("a", "", a.addr)
	w.ingress("web", "h", "/", "a")
	var buf syncBuffer
	reg := prometheus.NewRegistry()
	p := startProxy(t, Options{Registerer: reg, AccessLog: slog.New(slog.NewJSONHandler(&buf, nil))}, w.table(t))
	get(t, plainClient, p.httpURL+"/one", "h")
	get(t, plainClient, p.httpURL+"/two", "nowhere")
	log := buf.String()
	for _, want := range []string{`"route":"ingress/default/web"`, `"path":"/one"`, `"status":200`, `"upstream":"` + a.addr + `"`, `"status":404`} {
		if !strings.Contains(log, want) {
			t.Errorf("access log lacks %s:\n%s", want, log)
		}
	}
	if got := testutil.ToFloat64(p.metrics.requests.WithLabelValues("ingress/default/web", "2xx")); got != 1 {
		t.Errorf("requests{route=ingress/default/web,code=2xx} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(p.metrics.requests.WithLabelValues("none", "4xx")); got != 1 {
		t.Errorf("requests{route=none,code=4xx} = %v, want 1", got)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tlsSecret(t *testing.T, name string, names ...string) *corev1.Secret {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
		},
	}
}

var _ = tls.VersionTLS13
var _ routes.Listener
