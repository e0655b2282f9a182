// Package server assembles Skiff's control plane: credentials, etcd, the
// upstream API server, controller manager and scheduler, and the objects a
// fresh cluster needs, in one process.
package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/skiffnet/skiff/controlplane/membership"
	"github.com/skiffnet/skiff/controlplane/pki"
	lbcontroller "github.com/skiffnet/skiff/loadbalancer/controller"
)

// Config is what `skiff server` is told. Zero values take the documented defaults.
type Config struct {
	DataDir          string   // default /var/lib/skiff/server
	BindAddress      string   // default 0.0.0.0
	AdvertiseAddress string   // default: the address of the interface holding the default route
	HTTPSPort        int      // default 6443
	EtcdServers      []string // external etcd; empty → embedded etcd
	EtcdPort         int      // embedded etcd's loopback client port; default 2379
	EtcdCAFile       string
	EtcdCertFile     string
	EtcdKeyFile      string
	ClusterCIDR      string // default 10.244.0.0/16
	NodeCIDRMaskSize int    // default 24
	ServiceCIDR      string // default 10.96.0.0/12
	NodePortRange    string // default 30000-32767
	ClusterDNS       string // default 10.96.0.10
	ClusterDomain    string // default cluster.local
	// GatewayCIDR (--gateway-cidr) creates the LoadBalancerPool "gateways"
	// that serves Gateways of class skiff (CIDRs or START-STOP ranges);
	// empty: no pool is created, and without another pool serving
	// Gateways they share the nodes' addresses.
	GatewayCIDR string
	// LoadBalancerPool (--lb-pool) creates the LoadBalancerPool "default":
	// CIDRs or START-STOP ranges; empty: no pool is created.
	LoadBalancerPool string
	// RoutePods makes the server route every node's pod range itself
	// (cni/routes in ServerOnly mode). `skiff server --disable-agent` sets
	// it: with no node in this process, nothing else gives the API server
	// a path to pods for pods/proxy, webhooks and aggregated APIs.
	RoutePods bool

	// ClusterInit (--cluster-init) starts a cluster other servers can
	// join: etcd serves peers on the advertise address and the join
	// service listens on JoinPort.
	ClusterInit bool
	// JoinURL (--join) and JoinToken (--token) add this server to the
	// cluster of the server at JoinURL.
	JoinURL   string
	JoinToken string
	JoinPort  int // default membership.DefaultPort

	Out    io.Writer    // progress lines for a person
	Logger *slog.Logger // structured logs
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.DataDir, "/var/lib/skiff/server")
	def(&c.BindAddress, "0.0.0.0")
	def(&c.ClusterCIDR, "10.244.0.0/16")
	def(&c.ServiceCIDR, "10.96.0.0/12")
	def(&c.NodePortRange, "30000-32767")
	def(&c.ClusterDNS, "10.96.0.10")
	def(&c.ClusterDomain, "cluster.local")
	if c.HTTPSPort == 0 {
		c.HTTPSPort = 6443
	}
	if c.EtcdPort == 0 {
		c.EtcdPort = 2379
	}
	if c.NodeCIDRMaskSize == 0 {
		c.NodeCIDRMaskSize = 24
	}
	if c.JoinPort == 0 {
		c.JoinPort = membership.DefaultPort
	}
	if c.AdvertiseAddress == "" {
		c.AdvertiseAddress = DefaultRouteAddress()
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
	cluster, err := netip.ParsePrefix(c.ClusterCIDR)
	if err != nil {
		errs = append(errs, fmt.Errorf("--cluster-cidr %q: want a CIDR such as 10.244.0.0/16", c.ClusterCIDR))
	}
	svc, err := netip.ParsePrefix(c.ServiceCIDR)
	if err != nil {
		errs = append(errs, fmt.Errorf("--service-cidr %q: want a CIDR such as 10.96.0.0/12", c.ServiceCIDR))
	}
	if cluster.IsValid() && svc.IsValid() && cluster.Overlaps(svc) {
		errs = append(errs, fmt.Errorf("--cluster-cidr %s overlaps --service-cidr %s: pick ranges that do not overlap", cluster, svc))
	}
	if cluster.IsValid() && (c.NodeCIDRMaskSize <= cluster.Bits() || c.NodeCIDRMaskSize > 30) {
		errs = append(errs, fmt.Errorf("--node-cidr-mask-size %d: must be longer than --cluster-cidr's /%d and at most 30", c.NodeCIDRMaskSize, cluster.Bits()))
	}
	if dns, err := netip.ParseAddr(c.ClusterDNS); err != nil {
		errs = append(errs, fmt.Errorf("--cluster-dns %q: want an IP address inside --service-cidr", c.ClusterDNS))
	} else if svc.IsValid() && !svc.Contains(dns) {
		errs = append(errs, fmt.Errorf("--cluster-dns %s is outside --service-cidr %s: pick an address inside it, such as 10.96.0.10", dns, svc))
	}
	if err := c.lbFlags().Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := parsePortRange(c.NodePortRange); err != nil {
		errs = append(errs, err)
	}
	if c.HTTPSPort < 1 || c.HTTPSPort > 65535 {
		errs = append(errs, fmt.Errorf("--https-port %d: want 1-65535", c.HTTPSPort))
	}
	errs = append(errs, c.validateCluster()...)
	if ip := net.ParseIP(c.AdvertiseAddress); ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
		errs = append(errs, fmt.Errorf("--advertise-address %q: want a non-loopback address of this machine that nodes can reach (none was found on the default route)", c.AdvertiseAddress))
	}
	return errors.Join(errs...)
}

func (c *Config) validateCluster() []error {
	var errs []error
	switch {
	case c.JoinURL != "" && c.ClusterInit:
		errs = append(errs, errors.New("--join and --cluster-init: give --cluster-init to the first server only, --join to the others"))
	case c.JoinURL != "" && c.JoinToken == "":
		errs = append(errs, errors.New("--join needs --token: copy DATA/token from a server of the cluster"))
	case c.JoinToken != "" && c.JoinURL == "":
		errs = append(errs, errors.New("--token is for --join: name a server of the cluster with --join https://HOST:6443"))
	}
	if (c.JoinURL != "" || c.ClusterInit) && len(c.EtcdServers) > 0 {
		errs = append(errs, errors.New("--etcd-servers with --join or --cluster-init: servers on an external etcd share it already; start each with the same --etcd-servers instead"))
	}
	if c.JoinToken != "" {
		if _, err := pki.ParseJoinToken(c.JoinToken); err != nil {
			errs = append(errs, err)
		}
	}
	if c.JoinPort < 1 || c.JoinPort > 65535 {
		errs = append(errs, fmt.Errorf("--join-port %d: want 1-65535", c.JoinPort))
	}
	return errs
}

// settings are the flags every server of a cluster shares.
func (c *Config) settings() membership.Settings {
	return membership.Settings{
		ClusterCIDR: c.ClusterCIDR, NodeCIDRMaskSize: c.NodeCIDRMaskSize, ServiceCIDR: c.ServiceCIDR,
		NodePortRange: c.NodePortRange, ClusterDNS: c.ClusterDNS, ClusterDomain: c.ClusterDomain,
		GatewayCIDR: c.GatewayCIDR, LoadBalancerPool: c.LoadBalancerPool,
	}
}

// adopt takes the cluster's settings over this server's flags.
func (c *Config) adopt(s membership.Settings) {
	c.ClusterCIDR, c.NodeCIDRMaskSize, c.ServiceCIDR = s.ClusterCIDR, s.NodeCIDRMaskSize, s.ServiceCIDR
	c.NodePortRange, c.ClusterDNS, c.ClusterDomain = s.NodePortRange, s.ClusterDNS, s.ClusterDomain
	c.GatewayCIDR, c.LoadBalancerPool = s.GatewayCIDR, s.LoadBalancerPool
}

func parsePortRange(s string) (int, int, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return 0, 0, fmt.Errorf("--service-node-port-range %q: want LOW-HIGH such as 30000-32767", s)
	}
	return a, b, nil
}

// firstServiceIP is the address the `kubernetes` Service gets: the API
// server's certificate must carry it for in-cluster clients.
func firstServiceIP(cidr string) net.IP {
	p := netip.MustParsePrefix(cidr)
	return net.IP(p.Masked().Addr().Next().AsSlice())
}

// DefaultRouteAddress returns the source address the kernel picks for
// traffic leaving the machine (no packet is sent), or 127.0.0.1.
func DefaultRouteAddress() string {
	conn, err := net.Dial("udp4", "192.0.2.1:9") // TEST-NET-1: a UDP "dial" only selects a route
	if err != nil {
		return "127.0.0.1"
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String()
}

// lbFlags are the flags the load balancer allocator reads.
func (c *Config) lbFlags() lbcontroller.Flags {
	return lbcontroller.Flags{LBPool: c.LoadBalancerPool, GatewayCIDR: c.GatewayCIDR, ServiceCIDR: c.ServiceCIDR, ClusterCIDR: c.ClusterCIDR}
}
