package membership

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/skiffnet/skiff/agent/join"
	"github.com/skiffnet/skiff/controlplane/etcd"
	"github.com/skiffnet/skiff/controlplane/pki"
)

// Client is a joining server's connection to the join service of a
// server already in the cluster.
type Client struct {
	base  string // https://HOST:PORT
	token pki.JoinToken
	http  *http.Client
}

// Dial finds the join service of the server at serverURL (its API URL,
// https://HOST:6443) on port and trusts it only if its CA is the one the
// token names.
func Dial(ctx context.Context, serverURL string, port int, token pki.JoinToken) (*Client, error) {
	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("--join %q: want the URL of a server of the cluster, https://HOST:6443", serverURL)
	}
	base := "https://" + net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
	caPEM, err := join.FetchCA(ctx, base, token)
	if err != nil {
		return nil, fmt.Errorf("--join %s: %w; --join wants a running skiff server of the cluster (its join service listens on port %d, --join-port)", serverURL, err, port)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &Client{base: base, token: token, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// CheckDataDir refuses a data dir that holds another cluster's CA: joining
// with it would mix two clusters' keys.
func CheckDataDir(dataDir string, token pki.JoinToken) error {
	data, err := os.ReadFile(filepath.Join(dataDir, "tls", "ca.crt"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	cert, err := pki.ParseCert(data)
	if err != nil {
		return fmt.Errorf("%s/tls/ca.crt: %w", dataDir, err)
	}
	if pki.CAHash(cert) != token.CAHash {
		return fmt.Errorf("--data-dir %s belongs to another cluster (its CA is not the one the token names): join with an empty --data-dir, or start it without --join to run its own cluster", dataDir)
	}
	return nil
}

// FetchBootstrap writes the cluster's shared keys under dataDir/tls and
// its token to dataDir/token, and returns the cluster's settings.
func (c *Client) FetchBootstrap(ctx context.Context, dataDir string) (Settings, error) {
	var b bootstrap
	if err := c.do(ctx, http.MethodGet, "/v1/skiff/bootstrap", nil, &b); err != nil {
		return Settings{}, err
	}
	for _, name := range pki.SharedFiles {
		data, ok := b.Files[name]
		if !ok {
			return Settings{}, fmt.Errorf("the cluster sent no %s: is %s a Skiff server of the same version?", name, c.base)
		}
		mode := os.FileMode(0o600)
		if strings.HasSuffix(name, ".crt") || strings.HasSuffix(name, ".pub") {
			mode = 0o644
		}
		if err := pki.WriteFile(filepath.Join(dataDir, "tls", name), data, mode); err != nil {
			return Settings{}, err
		}
	}
	if err := pki.WriteFile(filepath.Join(dataDir, "token"), []byte(b.Token+"\n"), 0o600); err != nil {
		return Settings{}, err
	}
	return b.Settings, nil
}

// AddMember adds this server's etcd member as a learner and returns its ID
// and the initial-cluster list to start it with.
func (c *Client) AddMember(ctx context.Context, name, peerURL string) (uint64, string, error) {
	var resp memberResponse
	err := c.do(ctx, http.MethodPost, "/v1/skiff/members", memberRequest{Name: name, PeerURL: peerURL}, &resp)
	return resp.ID, resp.Initial, err
}

// Promote asks for learner id to become a voting member; it returns
// etcd.ErrNotInSync while the learner catches up.
func (c *Client) Promote(ctx context.Context, id uint64) error {
	err := c.do(ctx, http.MethodPost, "/v1/skiff/members/"+strconv.FormatUint(id, 16)+"/promote", nil, nil)
	var he *httpError
	if errors.As(err, &he) && he.code == http.StatusConflict {
		return etcd.ErrNotInSync
	}
	return err
}

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d: %s", e.code, e.msg) }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token.Bootstrap())
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("join service %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s answers but is not a Skiff join service (404 for %s): point --join at a skiff server", c.base, path)
	}
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("join service %s: %w", c.base, &httpError{code: resp.StatusCode, msg: strings.TrimSpace(string(msg))})
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("join service %s: bad answer: %w", c.base, err)
	}
	return nil
}
