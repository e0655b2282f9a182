package main

import (
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiffnet/skiff/agent"
	"github.com/skiffnet/skiff/controlplane/server"
	"github.com/skiffnet/skiff/loadbalancer/announce"
	"github.com/skiffnet/skiff/profiling"
	"github.com/skiffnet/skiff/proxy"
	"github.com/skiffnet/skiff/proxy/lbmap"
)

func newAgentCommand() *cobra.Command {
	var cfg agent.Config
	var debug bool
	var verbosity int
	var profileAddr string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a node: join the cluster, run pods through containerd, run the data plane",
		Long: `Run Skiff's node agent: it joins the server with the join token, runs the
upstream kubelet against containerd's CRI (starting its own containerd when none
answers at --container-runtime-endpoint), and runs this node's pod network,
eBPF service load balancing, cluster DNS and ingress proxy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			if cfg.NodeIP == "" {
				cfg.NodeIP = server.DefaultRouteAddress()
			}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			logger, err := redirectComponentLogs(filepath.Join(cfg.DataDir, "logs", "agent-"+cfg.NodeName+".log"), debug, verbosity)
			if err != nil {
				return err
			}
			a.SetLogger(logger)
			if _, err := profiling.Serve(cmd.Context(), profileAddr, logger); err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", "", "the server's URL, https://HOST:6443")
	f.StringVar(&cfg.APIServerLB, "apiserver-lb-addr", "127.0.0.1:6444", "where the node's load balancer over every API server listens; the kubelet and the data plane reach the API through it (a cluster of several servers keeps working when one dies)")
	f.StringVar(&cfg.Token, "token", "", "the join token from the server's DATA/token")
	f.StringVar(&cfg.NodeName, "node-name", "", "this node's name (default: the hostname)")
	f.StringVar(&cfg.NodeIP, "node-ip", "", "this node's address (default: the default route's source address)")
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/skiff/agent", "directory for the node's state")
	f.StringVar(&cfg.PodNetwork, "pod-network", "routed", "routed (nodes share a link) or vxlan (overlay)")
	f.StringVar(&cfg.RuntimeEndpoint, "container-runtime-endpoint", "", "CRI socket (default: Skiff's own containerd, started when nothing answers)")
	f.StringSliceVar(&cfg.ImageDirs, "images-dir", nil, "directories of image archives (*.tar) to import at start (default: DIR_OF_SKIFF/images, /var/lib/skiff/images)")
	f.StringSliceVar(&cfg.InsecureRegistries, "insecure-registry", nil, "registries (HOST:PORT) to pull from over plain HTTP")
	f.Var(prefixFlag{&cfg.ClusterCIDR}, "cluster-cidr", "the cluster's pod range, the server's --cluster-cidr (default 10.244.0.0/16); traffic leaving it is masqueraded")
	f.StringVar(&cfg.LBCgroup, "lb-cgroup", "/", "cgroup whose processes reach Services through the eBPF load balancer: / is the whole machine; simulated nodes sharing a kernel pass their own")
	f.StringVar(&cfg.IngressHTTP, "ingress-http", ":80", "where the ingress proxy listens for HTTP")
	f.StringVar(&cfg.IngressHTTPS, "ingress-https", ":443", "where the ingress proxy listens for HTTPS")
	f.BoolVar(&cfg.IngressAccessLog, "ingress-access-log", false, "log one structured line per request the ingress proxy serves (route, upstream, status, duration)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "where to serve Prometheus metrics (default NODE_IP:10249)")
	f.BoolVar(&debug, "debug", false, "print the kubelet's logs to stderr instead of DATA/logs")
	f.IntVarP(&verbosity, "v", "v", 0, "log verbosity of the kubelet")
	profileFlag(f, &profileAddr)
	cmd.AddCommand(newServicesCommand(), newPolicyCommand(), newFlowsCommand())
	return cmd
}

// newServicesCommand prints what the node's kernel holds for Services, read
// from the pinned BPF maps (like cilium-dbg service list).
func newServicesCommand() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List the Services this node's eBPF load balancer holds, with their backends",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir := agent.PinDir(node)
			es, err := proxy.Entries(dir)
			if err != nil {
				return fmt.Errorf("read the load balancer maps in %s: %w (is `skiff agent` running on node %s? pass --node-name)", dir, err, node)
			}
			lbmap.Print(c.OutOrStdout(), es)
			printAnnounced(c.OutOrStdout(), node)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node-name", defaultNodeName(), "the node whose maps to read")
	return cmd
}

// prefixFlag is a CIDR flag.
type prefixFlag struct{ p *netip.Prefix }

func (f prefixFlag) String() string {
	if f.p == nil || !f.p.IsValid() {
		return ""
	}
	return f.p.String()
}

func (f prefixFlag) Set(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("want a CIDR such as 10.244.0.0/16")
	}
	*f.p = p.Masked()
	return nil
}

func (prefixFlag) Type() string { return "cidr" }

// printAnnounced lists the LoadBalancer addresses this node answers ARP for
// (loadbalancer/announce), from the agent's state file.
func printAnnounced(w io.Writer, node string) {
	addrs, err := announce.ReadState(agent.AnnouncedFile(node))
	if err != nil || len(addrs) == 0 {
		fmt.Fprintln(w, "\nLoadBalancer addresses announced (ARP) by this node: none")
		return
	}
	fmt.Fprintf(w, "\nLoadBalancer addresses announced (ARP) by this node: %s\n", strings.Join(addrs, " "))
}
