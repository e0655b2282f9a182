package routes

import (
	"crypto/tls"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// certs chooses a certificate by server name.
type certs struct {
	exact map[string]*tls.Certificate
	// wild is keyed by the suffix after "*" (".example.com"); as in X.509
	// a wildcard covers exactly one label.
	wild map[string]*tls.Certificate
	def  *tls.Certificate
	// explicit is set once a certificate without hosts became the default;
	// until then the first certificate stands in.
	explicit bool
}

func (c *certs) lookup(name string) *tls.Certificate {
	if crt := c.exact[name]; crt != nil {
		return crt
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if crt := c.wild[name[i:]]; crt != nil {
			return crt
		}
	}
	return c.def
}

// add registers crt for host ("" means the default). The first registration
// of a name wins, and callers add in precedence order.
func (c *certs) add(host string, crt *tls.Certificate) {
	switch {
	case host == "":
		if !c.explicit {
			c.def, c.explicit = crt, true
		}
		return
	case strings.HasPrefix(host, "*."):
		if c.wild == nil {
			c.wild = map[string]*tls.Certificate{}
		}
		if c.wild[host[1:]] == nil {
			c.wild[host[1:]] = crt
		}
	default:
		if c.exact == nil {
			c.exact = map[string]*tls.Certificate{}
		}
		if c.exact[host] == nil {
			c.exact[host] = crt
		}
	}
	// Without an explicit default, the first certificate answers clients
	// that send no or an unknown server name; that beats a handshake error.
	if c.def == nil {
		c.def = crt
	}
}

// CertCache keeps parsed key pairs across rebuilds, keyed by Secret UID and
// resourceVersion, so a route change does not re-parse every certificate.
// The zero value is ready to use.
type CertCache struct {
	mu      sync.Mutex
	entries map[types.UID]certEntry
	seen    map[types.UID]bool
}

type certEntry struct {
	version string
	crt     *tls.Certificate
	err     error
}

// load parses a kubernetes.io/tls Secret.
func (c *CertCache) load(s *corev1.Secret) (*tls.Certificate, error) {
	if c == nil {
		return parseSecret(s)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen != nil {
		c.seen[s.UID] = true
	}
	if e, ok := c.entries[s.UID]; ok && e.version == s.ResourceVersion && s.UID != "" {
		return e.crt, e.err
	}
	crt, err := parseSecret(s)
	if s.UID != "" {
		if c.entries == nil {
			c.entries = map[types.UID]certEntry{}
		}
		c.entries[s.UID] = certEntry{version: s.ResourceVersion, crt: crt, err: err}
	}
	return crt, err
}

// begin and end bracket one build so entries of deleted Secrets go away.
func (c *CertCache) begin() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.seen = map[types.UID]bool{}
	c.mu.Unlock()
}

func (c *CertCache) end() {
	if c == nil {
		return
	}
	c.mu.Lock()
	for uid := range c.entries {
		if !c.seen[uid] {
			delete(c.entries, uid)
		}
	}
	c.seen = nil
	c.mu.Unlock()
}

func parseSecret(s *corev1.Secret) (*tls.Certificate, error) {
	crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("secret %s/%s: want %s and %s", s.Namespace, s.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return &pair, nil
}
