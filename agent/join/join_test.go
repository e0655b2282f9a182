package join

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiffnet/skiff/controlplane/pki"
)

// authority makes a CA as `skiff server` does, with its join token.
func authority(t *testing.T, name string) (*pki.Authority, pki.JoinToken, string) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateAuthority(dir, "ca", name)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.LoadOrCreateJoinToken(filepath.Join(dir, "token"), ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return ca, tok, dir
}

// serve answers TLS on l with a serving certificate of ca whose chain
// carries the CA, as `skiff server` does.
func serve(t *testing.T, l net.Listener, ca *pki.Authority, dir string) {
	t.Helper()
	leaf, err := ca.Issue(dir, pki.LeafSpec{Name: "serving", CommonName: "skiff", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Error(err)
		return
	}
	pair, err := tls.LoadX509KeyPair(leaf.CertPath, leaf.KeyPath)
	if err != nil {
		t.Error(err)
		return
	}
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{pair}})
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
}

// A server that is not up yet is waited for; the CA comes once it is.
func TestWaitForCAWaitsForTheServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens until the server "starts"
	ca, tok, dir := authority(t, "late")
	var failures int
	go func() {
		time.Sleep(500 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		serve(t, l, ca, dir)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	caPEM, err := WaitForCA(ctx, "https://"+addr, tok, 100*time.Millisecond, func(err error) {
		var u *UnreachableError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), "--server") {
			t.Errorf("reported %v, want an unreachable server naming --server", err)
		}
		failures++
	})
	if err != nil {
		t.Fatalf("WaitForCA: %v", err)
	}
	want, _ := os.ReadFile(ca.CertPath)
	if string(caPEM) != string(want) || failures == 0 {
		t.Errorf("got the CA %v after %d failed attempts; want the server's CA after at least one", string(caPEM) == string(want), failures)
	}
}

// A server with another CA is refused at once, not retried.
func TestWaitForCARefusesAnotherCA(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	theirs, _, dir := authority(t, "theirs")
	serve(t, l, theirs, dir)
	_, tok, _ := authority(t, "ours")
	_, err = WaitForCA(context.Background(), "https://"+l.Addr().String(), tok, time.Millisecond, func(err error) {
		t.Errorf("retried after %v", err)
	})
	if err == nil || !strings.Contains(err.Error(), "does not match the join token") {
		t.Fatalf("err %v, want the CA mismatch", err)
	}
}

// A server that never comes gives up when the context ends, saying why.
func TestWaitForCAGivesUpWithTheContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = WaitForCA(ctx, "https://"+addr, pki.JoinToken{}, 50*time.Millisecond, func(error) {})
	var u *UnreachableError
	if !errors.As(err, &u) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the unreachable server and the deadline", err)
	}
}
