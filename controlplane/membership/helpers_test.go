package membership

import (
	"crypto/tls"
	"net"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
)

func loopbackIPs() []net.IP { return []net.IP{net.IPv4(127, 0, 0, 1)} }

func tlsPair(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
}

func port(t *testing.T, srv *httptest.Server) int {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
