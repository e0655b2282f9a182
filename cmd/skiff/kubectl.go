package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

func newKubectlCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "kubectl",
		Short:              "Run kubectl against the local server (default kubeconfig: $SKIFF_DATA_DIR/kubeconfig)",
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			os.Exit(runKubectl(args))
			return nil
		},
	}
}

// runKubectl runs upstream kubectl. Without KUBECONFIG (or a --kubeconfig
// flag, which kubectl itself honours first) it uses the local server's admin
// kubeconfig when one is there.
func runKubectl(args []string) int {
	if os.Getenv("KUBECONFIG") == "" {
		local := filepath.Join(envOr("SKIFF_DATA_DIR", "/var/lib/skiff/server"), "kubeconfig")
		if _, err := os.Stat(local); err == nil {
			os.Setenv("KUBECONFIG", local)
		}
	}
	cmd := kubectlcmd.NewDefaultKubectlCommand()
	cmd.SetArgs(args)
	if err := cli.RunNoErrOutput(cmd); err != nil {
		cmdutil.CheckErr(err) // prints kubectl's own message and exits non-zero
	}
	return 0
}
