// Package agent assembles `skiff agent`: it joins the node to its server,
// makes sure a container runtime runs, runs the upstream kubelet, and runs
// Skiff's data plane (pod network, service load balancing, DNS, ingress)
// for this node.
package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Config is what `skiff agent` is told. Zero values take the documented defaults.
type Config struct {
	Server     string // https://HOST:6443
	Token      string // the server's DATA/token
	NodeName   string // default: the hostname, lowercased
	NodeIP     string // default: the default route's source address
	DataDir    string // default /var/lib/skiff/agent
	PodNetwork string // routed (default) or vxlan

	// RuntimeEndpoint is a CRI socket (default /run/skiff/NODE/containerd.sock).
	// When nothing answers there the agent starts and supervises its own
	// containerd listening at that path.
	RuntimeEndpoint string

	// ImageDirs hold image archives (*.tar) imported at start; default:
	// DIR_OF_SKIFF/images and /var/lib/skiff/images.
	ImageDirs []string
	// InsecureRegistries (HOST:PORT) are pulled from over plain HTTP.
	InsecureRegistries []string

	// LBCgroup is the cgroup (below the cgroup2 mount) whose processes the
	// socket load balancer serves: "/" for the whole machine (default), or
	// the node's own subtree when several simulated nodes share a kernel.
	LBCgroup string

	// IngressHTTP and IngressHTTPS are where the ingress proxy listens
	// (default :80 and :443).
	IngressHTTP, IngressHTTPS string
	// IngressAccessLog logs one structured line per proxied request.
	IngressAccessLog bool

	// MetricsAddr serves the data plane's Prometheus metrics (default
	// NODE_IP:10249, kube-proxy's metrics port).
	MetricsAddr string

	// ClusterCIDR holds every node's pod range (the server's
	// --cluster-cidr); pod traffic leaving it is masqueraded.
	ClusterCIDR netip.Prefix

	ClusterDNS    string // default 10.96.0.10
	ClusterDomain string // default cluster.local

	// APIServerLB is where the node's client-side load balancer over
	// every API server listens (default 127.0.0.1:6444); the kubelet and
	// the data plane reach the API through it (agent/serverlb).
	APIServerLB string

	// Kubeconfig, when set, is used instead of joining with Token: the
	// server's in-process agent gets its node credentials directly.
	Kubeconfig   string
	ClientCAFile string

	Out    io.Writer
	Logger *slog.Logger
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	if c.NodeName == "" {
		h, _ := os.Hostname()
		c.NodeName = strings.ToLower(h)
	}
	if c.DataDir == "" {
		c.DataDir = "/var/lib/skiff/agent"
	}
	if c.APIServerLB == "" {
		c.APIServerLB = "127.0.0.1:6444"
	}
	if c.PodNetwork == "" {
		c.PodNetwork = "routed"
	}
	if len(c.ImageDirs) == 0 {
		c.ImageDirs = defaultImageDirs()
	}
	if c.IngressHTTP == "" {
		c.IngressHTTP = ":80"
	}
	if c.IngressHTTPS == "" {
		c.IngressHTTPS = ":443"
	}
	if c.MetricsAddr == "" && c.NodeIP != "" {
		c.MetricsAddr = net.JoinHostPort(c.NodeIP, "10249")
	}
	if c.LBCgroup == "" {
		c.LBCgroup = "/"
	}
	if !c.ClusterCIDR.IsValid() {
		c.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if c.ClusterDNS == "" {
		c.ClusterDNS = "10.96.0.10"
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	if c.RuntimeEndpoint == "" {
		c.RuntimeEndpoint = "unix://" + filepath.Join("/run/skiff", c.NodeName, "containerd.sock")
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate names the flag that is wrong and how to fix it.
func (c *Config) Validate() error {
	var errs []error
	if c.Kubeconfig == "" {
		if u, err := url.Parse(c.Server); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("--server %q: want the server's URL, https://HOST:6443", c.Server))
		}
		if c.Token == "" {
			errs = append(errs, errors.New("--token: required; it is in the server's data dir (DATA/token)"))
		}
	}
	if ip := net.ParseIP(c.NodeIP); ip == nil || ip.IsLoopback() {
		errs = append(errs, fmt.Errorf("--node-ip %q: want this node's address other nodes reach it at", c.NodeIP))
	}
	if c.PodNetwork != "routed" && c.PodNetwork != "vxlan" {
		errs = append(errs, fmt.Errorf("--pod-network %q: want routed (nodes share a link) or vxlan (they do not)", c.PodNetwork))
	}
	if c.NodeName == "" || strings.ContainsAny(c.NodeName, "/_ ") {
		errs = append(errs, fmt.Errorf("--node-name %q: want a DNS label such as node-1", c.NodeName))
	}
	return errors.Join(errs...)
}

// stateDir holds this node's state; several simulated nodes on one machine
// get one each.
func (c *Config) stateDir() string { return filepath.Join(c.DataDir, c.NodeName) }

// CgroupRoot is the node's cgroup subtree.
func (c *Config) CgroupRoot() string { return "/skiff-" + c.NodeName }
