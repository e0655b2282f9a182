package membership

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiffnet/skiff/controlplane/pki"
)

// testCluster is a server's TLS dir with its join service behind a TLS
// test server whose chain carries the CA, as the API server's does.
func testCluster(t *testing.T) (*httptest.Server, pki.JoinToken, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	b, err := pki.Ensure(dir, pki.Names{IPs: nil, DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.LoadOrCreateJoinToken(filepath.Join(t.TempDir(), "token"), b.CA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	svc := &Service{Token: tok, TLSDir: dir, Settings: Settings{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16"}, Logger: slog.New(slog.DiscardHandler)}
	srv := httptest.NewUnstartedServer(svc.Handler())
	leaf, err := b.CA.Issue(dir, pki.LeafSpec{Name: "join-test", CommonName: "join", IPs: loopbackIPs(), Server: true})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tlsPair(leaf.CertPath, leaf.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = cert
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, tok, dir
}

func TestJoinerGetsTheClustersKeysAndSettings(t *testing.T) {
	srv, tok, dir := testCluster(t)
	c, err := Dial(context.Background(), "https://127.0.0.1:6443", port(t, srv), tok)
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	settings, err := c.FetchBootstrap(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	if settings.ClusterCIDR != "10.42.0.0/16" || settings.ServiceCIDR != "10.43.0.0/16" {
		t.Errorf("settings %+v: want the cluster's", settings)
	}
	for _, f := range pki.SharedFiles {
		want, _ := os.ReadFile(filepath.Join(dir, f))
		got, err := os.ReadFile(filepath.Join(data, "tls", f))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s: not the cluster's (%v)", f, err)
		}
	}
	got, _ := os.ReadFile(filepath.Join(data, "token"))
	if strings.TrimSpace(string(got)) != tok.String() {
		t.Errorf("token %q, want the cluster's", got)
	}
	if err := CheckDataDir(data, tok); err != nil {
		t.Errorf("the joined data dir is refused for its own cluster: %v", err)
	}
}

func TestWrongSecretIsRefused(t *testing.T) {
	srv, tok, _ := testCluster(t)
	bad := tok
	bad.Secret = "0123456789abcdef"
	c, err := Dial(context.Background(), "https://127.0.0.1:6443", port(t, srv), bad)
	if err != nil {
		t.Fatal(err) // the CA is right: the secret is checked by the service
	}
	data := t.TempDir()
	_, err = c.FetchBootstrap(context.Background(), data)
	var he *httpError
	if !errors.As(err, &he) || he.code != http.StatusUnauthorized || !strings.Contains(err.Error(), "not this cluster's") {
		t.Fatalf("err %v: want 401 naming the token", err)
	}
	if _, err := os.Stat(filepath.Join(data, "tls", "ca.key")); err == nil {
		t.Error("a refused join wrote the CA key")
	}
}

func TestOtherClustersTokenIsRefused(t *testing.T) {
	srv, _, _ := testCluster(t)
	_, other, _ := testCluster(t)
	_, err := Dial(context.Background(), "https://127.0.0.1:6443", port(t, srv), other)
	if err == nil || !strings.Contains(err.Error(), "does not match the join token") {
		t.Fatalf("err %v: want the CA mismatch named", err)
	}
}

func TestOtherClustersDataDirIsRefused(t *testing.T) {
	_, tok, _ := testCluster(t)
	data := t.TempDir()
	if _, err := pki.Ensure(filepath.Join(data, "tls"), pki.Names{}); err != nil {
		t.Fatal(err)
	}
	if err := CheckDataDir(data, tok); err == nil || !strings.Contains(err.Error(), "belongs to another cluster") {
		t.Fatalf("err %v: want the data dir refused", err)
	}
	if err := CheckDataDir(t.TempDir(), tok); err != nil {
		t.Errorf("an empty data dir is refused: %v", err)
	}
}

func TestNoServerAtJoinAddress(t *testing.T) {
	_, tok, _ := testCluster(t)
	_, err := Dial(context.Background(), "https://127.0.0.1:6443", 1, tok)
	if err == nil || !strings.Contains(err.Error(), "wants a running skiff server") {
		t.Fatalf("err %v: want the address named as not a Skiff server", err)
	}
	if _, err := Dial(context.Background(), "http://x", 9345, tok); err == nil || !strings.Contains(err.Error(), "--join") {
		t.Fatalf("err %v: want --join named", err)
	}
}
