package kubelet

import (
	"context"
	"fmt"
	"os"

	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"

	"github.com/skiffnet/skiff/controlplane/pki"
)

// Run writes the kubelet's configuration and runs the upstream kubelet until
// the process ends. The upstream command installs its own signal handling,
// which ends the process on SIGTERM the way a kubelet does.
func Run(ctx context.Context, cfg Config) error {
	if err := os.MkdirAll(cfg.RootDir, 0o700); err != nil {
		return fmt.Errorf("create kubelet root dir: %w", err)
	}
	data, err := cfg.configFile()
	if err != nil {
		return err
	}
	if err := pki.WriteFile(cfg.ConfigPath(), data, 0o600); err != nil {
		return err
	}
	cmd := kubeletapp.NewKubeletCommand(ctx)
	cmd.SetArgs(cfg.args(cfg.ConfigPath()))
	if err := cmd.ExecuteContext(ctx); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	return nil
}
