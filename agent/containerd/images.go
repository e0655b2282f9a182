package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Namespace is containerd's namespace the CRI plugin (and so the kubelet) uses.
const Namespace = "k8s.io"

// Import loads an OCI or docker image archive into the containerd at socket,
// where the kubelet finds it. It uses containerd's own `ctr` (the one
// shipped next to skiff, else one on PATH, for a runtime of the user's own)
// rather than linking containerd's client.
func Import(ctx context.Context, socket, archive string) (string, error) {
	if _, err := os.Stat(archive); err != nil {
		return "", fmt.Errorf("image archive: %w", err)
	}
	ctr, err := ctrPath()
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, ctr, "--address", socket, "--namespace", Namespace,
		"images", "import", "--all-platforms", archive).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("import %s: %w: %s", archive, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

func ctrPath() (string, error) {
	if b, ok := shipped(); ok {
		return b.Ctr, nil
	}
	p, err := exec.LookPath("ctr")
	if err != nil {
		return "", errors.New("ctr is neither next to skiff (" + BundleDir + "/, built by make build) nor on PATH")
	}
	return p, nil
}
