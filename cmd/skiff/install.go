package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/skiffnet/skiff/agent/cleanup"
	"github.com/skiffnet/skiff/install"
)

func newInstallCommand() *cobra.Command {
	var target install.Target
	var noStart bool
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install Skiff as systemd services on this machine",
	}
	cmd.PersistentFlags().StringVar(&target.Root, "root", "/", "install below this directory (for images and tests)")
	cmd.PersistentFlags().BoolVar(&noStart, "no-start", false, "write the units but do not start them")
	prepare := func(c *cobra.Command) install.Target {
		t := target
		t.Out, t.Start = c.OutOrStdout(), !noStart
		return t
	}
	var dataDir string
	server := &cobra.Command{
		Use:   "server [-- SERVER FLAGS]",
		Short: "Install the control plane (with this machine's node agent) as skiff-server.service",
		RunE: func(c *cobra.Command, extra []string) error {
			args := append([]string{"server", "--data-dir", dataDir}, extra...)
			return prepare(c).Install(c.Context(), install.Unit{Name: "skiff-server",
				Description: "Skiff server: Kubernetes control plane and node agent", Binary: install.BinaryPath, Args: args}, nil)
		},
	}
	server.Flags().StringVar(&dataDir, "data-dir", "/var/lib/skiff/server", "the server's data dir")
	var url, token, nodeName, nodeIP, podNetwork string
	agentCmd := &cobra.Command{
		Use:   "agent --server URL --token T [-- AGENT FLAGS]",
		Short: "Install a node agent that joins the server as skiff-agent.service",
		RunE: func(c *cobra.Command, extra []string) error {
			if url == "" || token == "" {
				return fmt.Errorf("--server and --token are required: the URL of `skiff server` and its DATA/token")
			}
			args := []string{"agent", "--server", url, "--token", "${SKIFF_TOKEN}", "--pod-network", podNetwork}
			if nodeName != "" {
				args = append(args, "--node-name", nodeName)
			}
			if nodeIP != "" {
				args = append(args, "--node-ip", nodeIP)
			}
			return prepare(c).Install(c.Context(), install.Unit{Name: "skiff-agent",
				Description: "Skiff agent: Kubernetes node", Binary: install.BinaryPath, Args: append(args, extra...)},
				map[string]string{"SKIFF_TOKEN": token})
		},
	}
	f := agentCmd.Flags()
	f.StringVar(&url, "server", "", "the server's URL, https://HOST:6443")
	f.StringVar(&token, "token", "", "the server's join token (DATA/token); kept in /etc/skiff/skiff-agent.env, mode 0600")
	f.StringVar(&nodeName, "node-name", "", "this node's name (default: the hostname)")
	f.StringVar(&nodeIP, "node-ip", "", "this node's address")
	f.StringVar(&podNetwork, "pod-network", "routed", "routed or vxlan")
	cmd.AddCommand(server, agentCmd)
	return cmd
}

func newUninstallCommand() *cobra.Command {
	var keepData bool
	var root, dataDir string
	var nodes []string
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop Skiff and remove its services, processes, mounts, network and BPF state from this machine",
		Long: `Stop Skiff and remove what it set up on this machine: its systemd units, the
processes of its nodes (containerd, shims, containers, the data plane), their
mounts, pod network namespaces, routes, masquerade table and BPF programs,
and their runtime state under /run/skiff. Without --keep-data it also removes
the data dir (etcd, certificates, token, node state): the cluster is gone.
With --keep-data the next start brings the same cluster and workloads back.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("run as root: uninstall stops containers and removes routes and BPF programs")
			}
			t := install.Target{Root: root, Start: true, Out: c.OutOrStdout()}
			for _, u := range []string{"skiff-agent", "skiff-server"} {
				if err := t.Remove(c.Context(), u); err != nil {
					return err
				}
			}
			agentDir := filepath.Join(dataDir, "agent")
			if len(nodes) == 0 {
				nodes = localNodes(agentDir)
			}
			var pins, runtime []string
			for _, n := range nodes {
				pins = append(pins, filepath.Join("/sys/fs/bpf/skiff", n))
				runtime = append(runtime, filepath.Join("/run/skiff", n))
			}
			return cleanup.Machine(cleanup.Options{
				Nodes: nodes, StateDirs: []string{dataDir}, KeepData: keepData, RuntimeDirs: runtime, BPFPins: pins, Out: c.OutOrStdout(),
			}, dataPlaneCleanup(agentDir, nodes)...)
		},
	}
	cmd.Flags().BoolVar(&keepData, "keep-data", false, "keep the data dir (etcd data, certificates, token, node state), so the next start brings the cluster back")
	cmd.Flags().StringVar(&root, "root", "/", "where the units were installed")
	cmd.Flags().StringVar(&dataDir, "data-dir", "/var/lib/skiff", "Skiff's data dir on this machine: the server's under server/, the nodes' under agent/")
	cmd.Flags().StringSliceVar(&nodes, "node", nil, "the nodes to stop and remove (default: every node with state under DATA/agent, and this machine's hostname); other Skiff nodes on this machine are left running")
	return cmd
}

// localNodes are the nodes agents on this machine ran as: one state
// directory each under the agent data dir, and the hostname's.
func localNodes(agentDir string) []string {
	nodes := []string{defaultNodeName()}
	entries, _ := os.ReadDir(agentDir)
	for _, e := range entries {
		if e.IsDir() && e.Name() != "logs" && e.Name() != nodes[0] {
			nodes = append(nodes, e.Name())
		}
	}
	return nodes
}
