package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/skiffnet/skiff/agent/dataplane"
)

// newDataPlaneCommand is the node's serving data plane (cluster DNS and
// the ingress proxy), which `skiff agent` starts and which outlives it.
// Users do not run it by hand; it is listed so `ps` output makes sense.
func newDataPlaneCommand() *cobra.Command {
	var cfg dataplane.Config
	var verbosity int
	cmd := &cobra.Command{
		Use:   "dataplane",
		Short: "The node's DNS server and ingress proxy (started by skiff agent; outlives it)",
		Long: `Serve this node's cluster DNS and Ingress / Gateway proxy. skiff agent starts it
and it keeps serving while the agent restarts or is upgraded: the next agent's data
plane takes over its listening sockets, loads its tables, and only then tells it to
drain. skiff uninstall stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.NodeName == "" || cfg.NodeIP == "" || cfg.Kubeconfig == "" {
				return fmt.Errorf("--node-name, --node-ip and --kubeconfig are required; skiff agent passes them")
			}
			cfg.Version = version
			// Output goes to the file the agent opened as stdout/stderr;
			// klog (client-go) writes there too.
			logger, err := redirectComponentLogs("", true, verbosity)
			if err != nil {
				return err
			}
			cfg.Logger = logger.With("pid", os.Getpid())
			return dataplane.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", defaultNodeName(), "this node's name")
	f.StringVar(&cfg.NodeIP, "node-ip", "", "this node's address; DNS answers on NODE_IP:53")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "the node's credentials")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS zone")
	f.StringVar(&cfg.IngressHTTP, "ingress-http", ":80", "where the ingress proxy listens for HTTP")
	f.StringVar(&cfg.IngressHTTPS, "ingress-https", ":443", "where the ingress proxy listens for HTTPS")
	f.BoolVar(&cfg.IngressAccessLog, "ingress-access-log", false, "log one structured line per proxied request")
	f.StringVar(&cfg.Socket, "socket", "", "control socket (default /run/skiff/NODE/dataplane.sock)")
	f.IntVarP(&verbosity, "v", "v", 0, "log verbosity of the Kubernetes client")
	return cmd
}
