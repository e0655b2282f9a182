package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/ingress/routes"
)

func ptr[T any](v T) *T { return &v }

// backend is a loopback HTTP server that names itself in every answer.
type backend struct {
	name string
	addr string // "127.0.0.1:port"
	srv  *http.Server
}

// startBackend serves h (default: an echo of name, path and Host) on a
// loopback port; h2c also accepts HTTP/2 with prior knowledge.
func startBackend(t testing.TB, name string, h http.Handler, h2c bool) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", name)
			fmt.Fprintf(w, "%s %s %s host=%s proto=%s xff=%s xfp=%s", name, r.Method, r.URL.RequestURI(), r.Host, r.Proto,
				r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
		})
	}
	s := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	s.Protocols.SetHTTP1(true)
	s.Protocols.SetUnencryptedHTTP2(h2c)
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return &backend{name: name, addr: ln.Addr().String(), srv: s}
}

// deadAddr returns a loopback address nothing listens on, for the whole
// test: a socket bound there but not listening holds the port (without
// SO_REUSEADDR, so no other test package's listener can take it), and
// connections to it are refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// world builds routes.Input objects whose endpoints are loopback servers.
type world struct {
	in routes.Input
}

// service adds a Service with port 80 ("http") whose endpoints are addrs,
// one EndpointSlice each (their ports differ).
func (w *world) service(name string, appProtocol string, addrs ...string) {
	sp := corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}
	if appProtocol != "" {
		sp.AppProtocol = &appProtocol
	}
	w.in.Services = append(w.in.Services, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{sp}},
	})
	for i, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		pn, _ := strconv.Atoi(port)
		w.in.EndpointSlices = append(w.in.EndpointSlices, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("%s-%d", name, i),
				Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(pn))}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
		})
	}
}

// ingress adds an Ingress routing host+prefix to service port 80.
func (w *world) ingress(name, host, prefix, service string) *networkingv1.Ingress {
	pt := networkingv1.PathTypePrefix
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(len(w.in.Ingresses)), 0))},
		Spec: networkingv1.IngressSpec{
			IngressClassName: ptr("skiff"),
			Rules: []networkingv1.IngressRule{{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: prefix, PathType: &pt, Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: service, Port: networkingv1.ServiceBackendPort{Number: 80}}}}},
			}}}},
		},
	}
	w.in.Ingresses = append(w.in.Ingresses, ing)
	return ing
}

func (w *world) table(t testing.TB) *routes.Table {
	t.Helper()
	res := routes.Build(w.in)
	for _, p := range res.Problems {
		t.Logf("problem: %s", p)
	}
	return res.Table
}

// running is a proxy serving on loopback listeners.
type running struct {
	*Proxy
	httpURL, httpsAddr string
}

func startProxy(t testing.TB, opts Options, tab *routes.Table) *running {
	t.Helper()
	opts.HTTPAddr, opts.HTTPSAddr = "", ""
	if opts.EjectFor == 0 {
		opts.EjectFor = time.Minute
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if tab != nil {
		p.Swap(tab)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.ServeListeners(ctx, hl, sl) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListeners: %v", err)
		}
	})
	return &running{Proxy: p, httpURL: "http://" + hl.Addr().String(), httpsAddr: sl.Addr().String()}
}

var plainClient = &http.Client{
	Transport: &http.Transport{MaxIdleConnsPerHost: 64},
	Timeout:   10 * time.Second,
	// redirects are answers to check, not to follow
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// get sends a request with the given Host and returns status and body.
func get(t *testing.T, c *http.Client, url, host string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func tlsClient(serverName string, h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{ServerName: serverName, InsecureSkipVerify: true},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
