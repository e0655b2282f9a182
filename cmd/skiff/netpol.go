package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/skiffnet/skiff/agent"
	"github.com/skiffnet/skiff/netpol"
)

// newPolicyCommand lists the node's policed pods with the kernel's allow
// and deny counters (docs/netpol.md).
func newPolicyCommand() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "List this node's pods isolated by NetworkPolicy, their policies and allow/deny counters",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := netpol.List(c.OutOrStdout(), agent.PinDir(node), agent.PolicyStatusFile(node)); err != nil {
				return fmt.Errorf("%w (is `skiff agent` running on node %s? pass --node-name)", err, node)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node-name", defaultNodeName(), "the node whose policy state to read")
	return cmd
}
