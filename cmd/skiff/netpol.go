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

// newFlowsCommand streams the flows the node's policy programs deny.
func newFlowsCommand() *cobra.Command {
	var node string
	var denied bool
	cmd := &cobra.Command{
		Use:   "flows --denied",
		Short: "Stream the packets NetworkPolicy drops on this node (source, destination, port, direction)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !denied {
				return fmt.Errorf("--denied: required; only denied flows are recorded")
			}
			if err := netpol.DeniedFlows(c.Context(), c.OutOrStdout(), agent.PinDir(node)); err != nil {
				return fmt.Errorf("%w (is `skiff agent` running on node %s? pass --node-name)", err, node)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node-name", defaultNodeName(), "the node whose drops to stream")
	cmd.Flags().BoolVar(&denied, "denied", false, "stream denied flows")
	return cmd
}
