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
		return nil, fmt.Errorf("reach server %s: %w (is `skiff server` running and --server right?)", host, err)
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

func verifyLeaf(leaf, ca *x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("server certificate is not signed by the token's CA: %w", err)
	}
	return nil
}
