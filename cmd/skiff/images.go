package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiffnet/skiff/agent/containerd"
)

func newImagesCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "images", Short: "Manage images in the node's containerd"}
	var endpoint, node string
	imp := &cobra.Command{
		Use:   "import FILE.tar...",
		Short: "Load OCI or docker image archives into this node's containerd",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, files []string) error {
			sock := strings.TrimPrefix(endpoint, "unix://")
			if sock == "" {
				sock = filepath.Join("/run/skiff", node, "containerd.sock")
			}
			if !containerd.Answers(sock) {
				return fmt.Errorf("no containerd answers at %s: is `skiff agent` running? (or pass --container-runtime-endpoint)", sock)
			}
			for _, f := range files {
				out, err := containerd.Import(c.Context(), sock, f)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.OutOrStdout(), out)
			}
			return nil
		},
	}
	imp.Flags().StringVar(&endpoint, "container-runtime-endpoint", "", "the node's containerd socket (default /run/skiff/NODE/containerd.sock)")
	imp.Flags().StringVar(&node, "node-name", defaultNodeName(), "the node whose containerd to use")
	cmd.AddCommand(imp)
	return cmd
}
