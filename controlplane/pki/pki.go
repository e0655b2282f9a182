// Package pki creates, on first start, the certificate authority, certificates,
// service-account keys and credentials a Skiff control plane needs, and reuses
// them on later starts so clients and nodes keep trusting the server.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 5 * 365 * 24 * time.Hour
)

// Authority is a certificate authority whose key signs leaf certificates.
type Authority struct {
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertPath string
	KeyPath  string
}

// LoadOrCreateAuthority reads name.crt/name.key from dir, creating a new
// self-signed CA with the given common name when neither exists.
func LoadOrCreateAuthority(dir, name, commonName string) (*Authority, error) {
	certPath := filepath.Join(dir, name+".crt")
	keyPath := filepath.Join(dir, name+".key")
	cert, key, err := loadPair(certPath, keyPath)
	if err == nil {
		return &Authority{Cert: cert, Key: key, CertPath: certPath, KeyPath: keyPath}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err = newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign CA %s: %w", commonName, err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, err
	}
	if err := writeCerts(certPath, cert); err != nil {
		return nil, err
	}
	return &Authority{Cert: cert, Key: key, CertPath: certPath, KeyPath: keyPath}, nil
}

// LeafSpec describes a certificate the authority issues.
type LeafSpec struct {
	Name         string // file base name under the directory
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Server       bool
	Client       bool
}

// Leaf is an issued certificate and the files holding it.
type Leaf struct {
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertPath string
	KeyPath  string
}

// Issue returns the certificate for spec from dir, issuing it anew when it is
// missing, was signed by another CA, or no longer carries the requested names
// (a node IP that changed, say). Server certificate files hold the leaf then
// the CA, so a client that knows only the CA's hash can learn the CA from the
// TLS handshake.
func (a *Authority) Issue(dir string, spec LeafSpec) (*Leaf, error) {
	certPath := filepath.Join(dir, spec.Name+".crt")
	keyPath := filepath.Join(dir, spec.Name+".key")
	cert, key, err := loadPair(certPath, keyPath)
	if err == nil && a.signed(cert) && covers(cert, spec) {
		return &Leaf{Cert: cert, Key: key, CertPath: certPath, KeyPath: keyPath}, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if key == nil {
		if key, err = newKey(); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPs,
	}
	if spec.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, key.Public(), a.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %s: %w", spec.Name, err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, err
	}
	chain := []*x509.Certificate{cert}
	if spec.Server {
		chain = append(chain, a.Cert)
	}
	if err := writeCerts(certPath, chain...); err != nil {
		return nil, err
	}
	return &Leaf{Cert: cert, Key: key, CertPath: certPath, KeyPath: keyPath}, nil
}

func (a *Authority) signed(cert *x509.Certificate) bool {
	return cert.CheckSignatureFrom(a.Cert) == nil && time.Now().Before(cert.NotAfter)
}

func covers(cert *x509.Certificate, spec LeafSpec) bool {
	if cert.Subject.CommonName != spec.CommonName || !slices.Equal(cert.Subject.Organization, spec.Organization) {
		return false
	}
	for _, name := range spec.DNSNames {
		if !slices.Contains(cert.DNSNames, name) {
			return false
		}
	}
	for _, ip := range spec.IPs {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// LoadOrCreateKeyPair reads or creates a bare key pair (the service-account
// signing key): name.key holds the private key, name.pub the public key.
func LoadOrCreateKeyPair(dir, name string) (keyPath, pubPath string, err error) {
	keyPath = filepath.Join(dir, name+".key")
	pubPath = filepath.Join(dir, name+".pub")
	if _, err := os.Stat(keyPath); err == nil {
		if _, err := os.Stat(pubPath); err == nil {
			return keyPath, pubPath, nil
		}
	}
	key, err := newKey()
	if err != nil {
		return "", "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return "", "", err
	}
	if err := writeKey(keyPath, key); err != nil {
		return "", "", err
	}
	if err := writeFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return "", "", err
	}
	return keyPath, pubPath, nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the OS random source never fails on Linux
	}
	return n
}
