package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiffnet/skiff/controlplane/etcd"
)

func newSnapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "etcd-snapshot",
		Short: "Save and restore the control plane's etcd data",
	}
	var dataDir string
	var endpoints []string
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Write a snapshot of the running server's etcd to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(endpoints) == 0 {
				b, err := os.ReadFile(filepath.Join(dataDir, "etcd-endpoint"))
				if err != nil {
					return fmt.Errorf("no embedded etcd recorded in %s (%w): start `skiff server --data-dir %s` or pass --etcd-servers", dataDir, err, dataDir)
				}
				endpoints = []string{strings.TrimSpace(string(b))}
			}
			v, err := etcd.Save(cmd.Context(), endpoints, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved snapshot %s (etcd %s)\n", args[0], v)
			return nil
		},
	}
	save.Flags().StringVar(&dataDir, "data-dir", envOr("SKIFF_DATA_DIR", "/var/lib/skiff/server"), "data dir of the server whose embedded etcd to snapshot")
	save.Flags().StringSliceVar(&endpoints, "etcd-servers", nil, "etcd client URLs to snapshot instead of the embedded etcd")

	var port int
	restore := &cobra.Command{
		Use:   "restore FILE --data-dir NEW",
		Short: "Create a new server data dir whose etcd holds the snapshot's data",
		Long: `Restore FILE into a new data dir. Start the server on it with
` + "`skiff server --data-dir NEW`" + `; copy DATA/tls and DATA/token from the old data dir
first if existing nodes and kubeconfigs should keep working.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("data-dir") {
				return fmt.Errorf("--data-dir: name the new data dir to restore into")
			}
			if err := etcd.Restore(args[0], dataDir, port); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s; start it with: skiff server --data-dir %s\n", args[0], dataDir, dataDir)
			return nil
		},
	}
	restore.Flags().StringVar(&dataDir, "data-dir", "", "new data dir (must not hold an etcd yet)")
	restore.Flags().IntVar(&port, "etcd-port", 2379, "the embedded etcd client port the restored server will use")
	cmd.AddCommand(save, restore)
	return cmd
}
