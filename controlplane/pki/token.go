package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// A JoinToken lets a node join: it names the CA by hash (so the node can
// trust the server it first talks to) and carries a Kubernetes bootstrap
// token (so the node can ask for its own client certificate). The text form
// is "K10<sha256 of the CA certificate>::<id>.<secret>".
type JoinToken struct {
	CAHash string // hex sha256 of the CA certificate's DER bytes
	ID     string // bootstrap token id, [a-z0-9]{6}
	Secret string // bootstrap token secret, [a-z0-9]{16}
}

var (
	tokenIDRe     = regexp.MustCompile(`^[a-z0-9]{6}$`)
	tokenSecretRe = regexp.MustCompile(`^[a-z0-9]{16}$`)
)

// String is the form written to DATA/token and passed to `skiff agent --token`.
func (t JoinToken) String() string { return "K10" + t.CAHash + "::" + t.ID + "." + t.Secret }

// Bootstrap is the bearer token the API server's bootstrap authenticator accepts.
func (t JoinToken) Bootstrap() string { return t.ID + "." + t.Secret }

// ParseJoinToken parses the text form, naming what is wrong.
func ParseJoinToken(s string) (JoinToken, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, "K10")
	hash, boot, ok2 := strings.Cut(rest, "::")
	if !ok || !ok2 || len(hash) != 64 {
		return JoinToken{}, errors.New(`--token: want "K10<ca-hash>::<id>.<secret>" as printed in the server's DATA/token file`)
	}
	id, secret, _ := strings.Cut(boot, ".")
	if !tokenIDRe.MatchString(id) || !tokenSecretRe.MatchString(secret) {
		return JoinToken{}, errors.New("--token: the part after '::' must be <6 lowercase letters/digits>.<16 lowercase letters/digits>; copy DATA/token from the server again")
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return JoinToken{}, fmt.Errorf("--token: CA hash is not hex: %w", err)
	}
	return JoinToken{CAHash: hash, ID: id, Secret: secret}, nil
}

// CAHash is the hash a JoinToken names for ca.
func CAHash(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.Raw)
	return hex.EncodeToString(sum[:])
}

// LoadOrCreateJoinToken reads path, creating a fresh token for ca when it is missing.
func LoadOrCreateJoinToken(path string, ca *x509.Certificate) (JoinToken, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		tok, err := ParseJoinToken(string(data))
		if err != nil {
			return JoinToken{}, fmt.Errorf("%s: %w", path, err)
		}
		if tok.CAHash != CAHash(ca) {
			return JoinToken{}, fmt.Errorf("%s names another CA than this data dir's; delete it to have Skiff write a new one", path)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return JoinToken{}, err
	}
	tok := JoinToken{CAHash: CAHash(ca), ID: randomString(6), Secret: randomString(16)}
	if err := writeFile(path, []byte(tok.String()+"\n"), 0o600); err != nil {
		return JoinToken{}, err
	}
	return tok, nil
}

func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
