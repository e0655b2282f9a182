// Command skiff is Skiff's one binary: the control plane (`skiff server`),
// the node agent (`skiff agent`), an embedded kubectl and operations tools.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	kubeversion "k8s.io/component-base/version"
)

// version is set at link time (see the Makefile).
var version = "dev"

func main() {
	// Installed as a `kubectl` link, skiff is kubectl.
	if filepath.Base(os.Args[0]) == "kubectl" {
		os.Exit(runKubectl(os.Args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(userErr, "skiff:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "skiff",
		Short:         "Skiff: a networking-first Kubernetes in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		// The embedded upstream components register a global --version flag;
		// honour it here so `skiff --version` answers like `skiff version`.
		Run: func(cmd *cobra.Command, _ []string) {
			if f := cmd.Flags().Lookup("version"); f != nil && f.Changed && f.Value.String() != "false" {
				printVersion(cmd)
				return
			}
			_ = cmd.Help()
		},
	}
	root.AddCommand(newServerCommand(), newAgentCommand(), newDataPlaneCommand(), newKubectlCommand(), newSnapshotCommand(), newMembersCommand(), newInstallCommand(), newUninstallCommand(), newImagesCommand(), newVersionCommand())
	return root
}

// defaultNodeName is the node name an agent on this machine uses by default.
func defaultNodeName() string {
	h, _ := os.Hostname()
	return strings.ToLower(h)
}

// newVersionCommand prints skiff's version and the Kubernetes version it is
// built from. It is a subcommand, not a --version flag, because the embedded
// upstream components register a global version flag of their own.
func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print skiff's version and the Kubernetes version it is built from",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { printVersion(cmd) },
	}
}

func printVersion(cmd *cobra.Command) {
	fmt.Fprintf(cmd.OutOrStdout(), "skiff %s (Kubernetes %s)\n", version, kubeversion.Get().GitVersion)
}
