package healthcheck

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func probe(t *testing.T, s *Server, port uint16) (int, reply, http.Header) {
	t.Helper()
	a := s.Addr(port)
	if a == nil {
		t.Fatalf("no listener for port %d", port)
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/healthz", a))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("body: %v", err)
	}
	return resp.StatusCode, r, resp.Header
}

func TestHealthCheckAnswersLikeKubeProxy(t *testing.T) {
	s := New(netip.MustParseAddr("127.0.0.1"), nil)
	t.Cleanup(func() { s.Close() })
	web := types.NamespacedName{Namespace: "default", Name: "web"}
	if err := s.Sync(web, 0, 2); err != nil || s.Addr(0) != nil {
		t.Fatalf("port 0 must mean no listener (%v)", err)
	}
	p := freePort(t)
	if err := s.Sync(web, p, 2); err != nil {
		t.Fatal(err)
	}
	code, r, h := probe(t, s, p)
	if code != http.StatusOK || r.LocalEndpoints != 2 || r.Service.Name != "web" || r.Service.Namespace != "default" || !r.ServiceProxyHealthy {
		t.Errorf("with 2 local endpoints: %d %+v, want 200 and localEndpoints 2", code, r)
	}
	if h.Get("Content-Type") != "application/json" || h.Get("X-Load-Balancing-Endpoint-Weight") != "2" {
		t.Errorf("headers %v", h)
	}

	if err := s.Sync(web, p, 0); err != nil {
		t.Fatal(err)
	}
	if code, r, _ := probe(t, s, p); code != http.StatusServiceUnavailable || r.LocalEndpoints != 0 {
		t.Errorf("without local endpoints: %d %+v, want 503", code, r)
	}

	// Removing the Service closes its port.
	if err := s.Sync(web, 0, 0); err != nil {
		t.Fatal(err)
	}
	if s.Addr(p) != nil {
		t.Error("listener left after the Service went away")
	}
	c := &http.Client{Timeout: time.Second}
	if _, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", p)); err == nil {
		t.Error("port still answers after the Service went away")
	}
}

func TestHealthCheckPortChange(t *testing.T) {
	s := New(netip.MustParseAddr("127.0.0.1"), nil)
	t.Cleanup(func() { s.Close() })
	web := types.NamespacedName{Namespace: "default", Name: "web"}
	p1, p2 := freePort(t), freePort(t)
	if err := s.Sync(web, p1, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(web, p2, 1); err != nil {
		t.Fatal(err)
	}
	if s.Addr(p1) != nil {
		t.Errorf("old port %d still open", p1)
	}
	if code, _, _ := probe(t, s, p2); code != http.StatusOK {
		t.Errorf("new port answers %d", code)
	}
}

// freePort returns a port free on 127.0.0.1 right now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}
