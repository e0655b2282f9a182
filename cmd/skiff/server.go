package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiffnet/skiff/agent"
	"github.com/skiffnet/skiff/controlplane/server"
	"github.com/skiffnet/skiff/footprint"
	"github.com/skiffnet/skiff/profiling"
)

// serverGCPercent is the server's GOGC unless the environment sets one
// (docs/operations.md, "Memory").
const serverGCPercent = 50

func newServerCommand() *cobra.Command {
	var cfg server.Config
	var debug, disableAgent bool
	var verbosity int
	var profileAddr string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (API server, controllers, scheduler on etcd)",
		Long: `Run Skiff's control plane in one process: the upstream kube-apiserver,
kube-controller-manager and kube-scheduler on an embedded etcd (or an external
etcd cluster with --etcd-servers). The first start creates a CA, certificates,
an admin kubeconfig (DATA/kubeconfig) and a node join token (DATA/token); later
starts reuse them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The control plane's live heap is ~150 MB of mostly long-lived
			// data (API schemes, OpenAPI specs); GOGC=100 lets the heap
			// grow to twice that between collections. Idle, it allocates
			// little, so collecting at 1.5x costs little CPU.
			footprint.SetGCPercent(serverGCPercent)
			cfg.Out = cmd.OutOrStdout()
			if cfg.DataDir == "" {
				cfg.DataDir = "/var/lib/skiff/server"
			}
			// Without a node in this process nothing else routes the API
			// server to pods; with one, the agent's own controller does.
			cfg.RoutePods = disableAgent
			s, err := server.New(cfg) // checks flags, data dir and ports before anything is written
			if err != nil {
				return err
			}
			logger, err := redirectComponentLogs(filepath.Join(cfg.DataDir, "logs", "server.log"), debug, verbosity)
			if err != nil {
				return err
			}
			s.SetLogger(logger)
			if _, err := profiling.Serve(cmd.Context(), profileAddr, logger); err != nil {
				return err
			}
			if disableAgent {
				return s.Run(cmd.Context(), nil)
			}
			return runServerWithAgent(cmd.Context(), s, cfg, cmd.OutOrStdout(), logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", envOr("SKIFF_DATA_DIR", "/var/lib/skiff/server"), "directory for etcd data, certificates, kubeconfig and token")
	f.StringVar(&cfg.BindAddress, "bind-address", "0.0.0.0", "address the API server listens on")
	f.StringVar(&cfg.AdvertiseAddress, "advertise-address", "", "address nodes reach the API server at (default: the default route's source address)")
	f.IntVar(&cfg.HTTPSPort, "https-port", 6443, "API server port")
	f.StringSliceVar(&cfg.EtcdServers, "etcd-servers", nil, "external etcd client URLs (comma-separated); default: embedded etcd under --data-dir")
	f.IntVar(&cfg.EtcdPort, "etcd-port", 2379, "embedded etcd's loopback client port (the peer port is one above)")
	f.StringVar(&cfg.EtcdCAFile, "etcd-cafile", "", "CA file for an external etcd's TLS")
	f.StringVar(&cfg.EtcdCertFile, "etcd-certfile", "", "client certificate for an external etcd")
	f.StringVar(&cfg.EtcdKeyFile, "etcd-keyfile", "", "client key for an external etcd")
	f.StringVar(&cfg.ClusterCIDR, "cluster-cidr", "10.244.0.0/16", "pod network; each node gets a PodCIDR from it")
	f.IntVar(&cfg.NodeCIDRMaskSize, "node-cidr-mask-size", 24, "prefix length of each node's PodCIDR")
	f.StringVar(&cfg.ServiceCIDR, "service-cidr", "10.96.0.0/12", "range ClusterIPs are allocated from")
	f.StringVar(&cfg.NodePortRange, "service-node-port-range", "30000-32767", "range NodePorts are allocated from")
	f.StringVar(&cfg.ClusterDNS, "cluster-dns", "10.96.0.10", "ClusterIP of the cluster DNS Service (kube-system/kube-dns)")
	f.StringVar(&cfg.LoadBalancerPool, "lb-pool", "", "addresses for LoadBalancer Services: CIDRs or START-STOP ranges, comma-separated, as the LoadBalancerPool \"default\" (empty: without pools, Services get their nodes' addresses)")
	f.StringVar(&cfg.GatewayCIDR, "gateway-cidr", "", "addresses for Gateways of class skiff, one each: CIDRs or START-STOP ranges, as the LoadBalancerPool \"gateways\" (spec.serves [Gateways]); one node answers ARP for each, so on the nodes' own subnet no route is needed (empty: Gateways share the nodes' addresses)")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "cluster DNS domain")
	f.BoolVar(&cfg.ClusterInit, "cluster-init", false, "start a cluster other servers can join with --join: embedded etcd serves its peers on --advertise-address (ports --etcd-port and one above) and the join service listens on --join-port")
	f.StringVar(&cfg.JoinURL, "join", "", "join the cluster of the server at this URL (https://HOST:6443) as one more server; needs --token")
	f.StringVar(&cfg.JoinToken, "token", "", "with --join: the cluster's token, DATA/token on any of its servers")
	f.IntVar(&cfg.JoinPort, "join-port", 9345, "port of the join service other servers use (cluster servers only)")
	f.BoolVar(&disableAgent, "disable-agent", false, "run only the control plane, without a node agent in this process")
	f.BoolVar(&debug, "debug", false, "print the upstream components' logs to stderr instead of DATA/logs/server.log")
	f.IntVarP(&verbosity, "v", "v", 0, "log verbosity of the upstream components")
	profileFlag(f, &profileAddr)
	return cmd
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// runServerWithAgent runs the control plane and, once it is ready, this
// machine's node agent in the same process: one command, one working node.
func runServerWithAgent(ctx context.Context, s *server.Server, cfg server.Config, out io.Writer, logger *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	errs := make(chan error, 2)
	go func() { errs <- s.Run(ctx, ready) }()
	select {
	case <-ready:
	case err := <-errs:
		return err
	}
	name, _ := os.Hostname()
	name = strings.ToLower(name)
	kubeconfig, ca, err := s.NodeKubeconfig(name)
	if err != nil {
		return err
	}
	clusterCIDR, err := netip.ParsePrefix(cfg.ClusterCIDR)
	if err != nil {
		return fmt.Errorf("--cluster-cidr %q: %w", cfg.ClusterCIDR, err)
	}
	a, err := agent.New(agent.Config{NodeName: name, NodeIP: s.Address(), Kubeconfig: kubeconfig, ClientCAFile: ca,
		ClusterCIDR: clusterCIDR, ClusterDNS: cfg.ClusterDNS, ClusterDomain: cfg.ClusterDomain,
		DataDir: envOr("SKIFF_AGENT_DATA_DIR", "/var/lib/skiff/agent"), Out: out, Logger: logger})
	if err != nil {
		return err
	}
	go func() { errs <- a.Run(ctx) }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}
