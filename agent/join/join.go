// Package join lets a node find and trust its server from nothing but the
// server URL and the join token: it learns the CA from the TLS handshake,
// checks it against the hash the token carries, and writes the bootstrap
// kubeconfig the kubelet uses to request its own client certificate.
package join

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/skiffnet/skiff/controlplane/pki"
)

// FetchCA connects to server and returns the PEM of the CA whose hash the
// token names. The server sends its certificate chain with the CA in it.
func FetchCA(ctx context.Context, server string, token pki.JoinToken) ([]byte, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want https://HOST:6443", server)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	d := &tls.Dialer{Config: &tls.Config{
		// The chain is checked by hash below instead of by a CA we do not have yet.
		InsecureSkipVerify: true, //nolint:gosec
		MinVersion:         tls.VersionTLS12,
	}, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, &UnreachableError{Host: host, Err: err}
	}
	defer conn.Close()
	chain := conn.(*tls.Conn).ConnectionState().PeerCertificates
	for _, c := range chain {
		if c.IsCA && pki.CAHash(c) == token.CAHash {
			if err := verifyLeaf(chain[0], c); err != nil {
				return nil, err
			}
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), nil
		}
	}
	return nil, errors.New("the server's CA does not match the join token: the token is from another cluster, or someone is in between; copy DATA/token from the server again")
}

// WaitForCA is FetchCA retried every interval while the server cannot be
// reached, as a node that boots before its server, or whose link has just
// come up (its first ARP requests lost), must; the kubelet retries the
// same way. report hears each failed attempt. A server that answers with
// the wrong CA is an error at once.
func WaitForCA(ctx context.Context, server string, token pki.JoinToken, interval time.Duration, report func(error)) ([]byte, error) {
	for {
		caPEM, err := FetchCA(ctx, server, token)
		var unreachable *UnreachableError
		if err == nil || !errors.As(err, &unreachable) {
			return caPEM, err
		}
		report(err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", err, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// UnreachableError is a server that could not be reached at all: worth
// retrying (the server may still be starting, the node's link may just
// have come up), unlike a server that answers with the wrong CA.
type UnreachableError struct {
	Host string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("reach server %s: %v (is `skiff server` running and --server right?)", e.Host, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

func verifyLeaf(leaf, ca *x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("server certificate is not signed by the token's CA: %w", err)
	}
	return nil
}
