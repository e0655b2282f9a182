package join

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/skiffnet/skiff/controlplane/pki"
)

// StateCAFile, in a node's state dir, is the CA of the cluster the node
// joined. It says which cluster the rest of the state (kubelet certificates,
// pods, the pinned data plane) belongs to.
const StateCAFile = "ca.crt"

// CheckState refuses to run a node over the state of another cluster's node:
// the kubelet would present the old cluster's certificates to the new
// server, and the data plane would replace the pinned maps that still serve
// the old cluster's pods. It runs before the agent touches anything.
//
// The cluster the agent is told to join is named by the join token's CA
// hash, or, for the server's own node (no token), by caFile, the server's
// CA, which is recorded in stateDir the first time. A state dir that never
// joined a cluster belongs to none yet.
func CheckState(stateDir, token, caFile string) error {
	recorded := filepath.Join(stateDir, StateCAFile)
	have, err := fileCAHash(recorded)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--data-dir: %w; remove that file if this node should join anew", err)
	}
	if token != "" {
		tok, err := pki.ParseJoinToken(token)
		if err != nil {
			return err
		}
		if have != "" && have != tok.CAHash {
			return fmt.Errorf("--token: it is the token of another cluster (CA sha256 %s) than the one this node's state in %s belongs to (CA sha256 %s); "+
				"pass the token of the node's cluster (its server's DATA/token), or wipe this node first with `skiff uninstall`, or give it another --data-dir",
				short(tok.CAHash), stateDir, short(have))
		}
		// The CA is recorded once the server proved it holds it (FetchCA).
		return nil
	}
	if caFile == "" {
		return nil
	}
	want, err := fileCAHash(caFile)
	if err != nil {
		return fmt.Errorf("the server's CA: %w", err)
	}
	if have == "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		return pki.WriteFile(recorded, b, 0o644)
	}
	if have != want {
		return fmt.Errorf("this machine's node state in %s belongs to another cluster (CA sha256 %s) than this server's (CA sha256 %s), "+
			"as happens when the server's --data-dir is new: wipe the old node state with `skiff uninstall`, or set SKIFF_AGENT_DATA_DIR to another directory",
			stateDir, short(have), short(want))
	}
	return nil
}

// fileCAHash is the join-token hash of the first certificate in a PEM file.
func fileCAHash(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("%s holds no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return pki.CAHash(c), nil
}

// short is enough of a hash for a person to compare two.
func short(hash string) string { return hash[:12] + "…" }
