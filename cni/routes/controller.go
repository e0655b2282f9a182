package routes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/skiffnet/skiff/cni/netaddr"
)

// Options configure the route controller.
type Options struct {
	Client kubernetes.Interface
	// Informers, when set, is the agent's shared factory; Run starts it.
	// Otherwise Run makes its own from Client.
	Informers informers.SharedInformerFactory
	NodeName  string
	// NodeIP is this node's address; unset, it is taken from the Node's
	// InternalIP once registered.
	NodeIP netip.Addr
	Mode   Mode
	// ClusterCIDR is the range of all pod ranges (the server's
	// --cluster-cidr). Pod traffic leaving it is masqueraded; unset, no
	// masquerading is done.
	ClusterCIDR netip.Prefix
	// Resync is how often the kernel state is re-checked and repaired
	// without a Node change (default 30s).
	Resync     time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer // optional
	// ServerOnly runs the controller for a control plane that has no node
	// of its own (`skiff server --disable-agent`): it routes every Node's
	// pod range via that node so the API server can dial pods (pods/proxy,
	// webhooks, aggregated APIs), and does nothing a node does: no
	// forwarding, no masquerading, no VXLAN device. NodeName is unused and
	// NodeIP must be the server's address on the nodes' link.
	ServerOnly bool
}

type routeApplier interface{ Apply(Desired) error }

type masqApplier interface {
	Apply(netip.Prefix, []netip.Addr) error
}

// Controller keeps the node's pod routes in line with the cluster's Nodes.
type Controller struct {
	o     Options
	nodes corelisters.NodeLister
	kick  chan struct{}

	// newRoutes and masq are the appliers; tests replace them.
	newRoutes func(Mode, netip.Addr) (routeApplier, error)
	routes    routeApplier
	masq      masqApplier
	forward   func() error

	syncs    *prometheus.CounterVec
	peers    prometheus.Gauge
	duration prometheus.Histogram
}

// New checks o and prepares a controller; Run starts it.
func New(o Options) (*Controller, error) {
	if o.Client == nil && o.Informers == nil {
		return nil, errors.New("routes: a Kubernetes client is required")
	}
	if o.ServerOnly {
		if !o.NodeIP.Is4() {
			return nil, fmt.Errorf("routes: the server's address %s: want the IPv4 address it reaches the nodes from (--advertise-address)", o.NodeIP)
		}
		// Direct routes are the only mode a non-node can use: the nodes'
		// VXLAN devices know only each other's VTEPs.
		o.Mode, o.NodeName, o.ClusterCIDR = ModeRouted, "", netip.Prefix{}
	}
	if o.NodeName == "" && !o.ServerOnly {
		return nil, errors.New("routes: the node name is required")
	}
	if o.Mode != ModeRouted && o.Mode != ModeVXLAN {
		return nil, fmt.Errorf("--pod-network %q: want routed (nodes share a link) or vxlan (they do not)", o.Mode)
	}
	if o.NodeIP.IsValid() && !o.NodeIP.Is4() {
		return nil, fmt.Errorf("routes: node address %s: want IPv4", o.NodeIP)
	}
	if o.ClusterCIDR.IsValid() && !o.ClusterCIDR.Addr().Is4() {
		return nil, fmt.Errorf("routes: cluster CIDR %s: want IPv4", o.ClusterCIDR)
	}
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Informers == nil {
		o.Informers = informers.NewSharedInformerFactory(o.Client, 0)
	}
	c := &Controller{
		o:    o,
		kick: make(chan struct{}, 1),
		newRoutes: func(m Mode, ip netip.Addr) (routeApplier, error) {
			return NewNetlink(m, ip)
		},
		forward: netaddr.EnableForwarding,
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_podnet_syncs_total", Help: "Pod network route syncs, by result.",
		}, []string{"result"}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_podnet_peer_routes", Help: "Other nodes' pod ranges this node routes.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "skiff_podnet_sync_seconds", Help: "Time to bring routes in line with the Nodes.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
	if o.Registerer != nil {
		for _, m := range []prometheus.Collector{c.syncs, c.peers, c.duration} {
			if err := o.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("routes: register metrics: %w", err)
			}
		}
	}
	return c, nil
}

// Run watches Nodes and programs routes until ctx is done. Routes and the
// masquerade rule stay when it returns, so pods keep connectivity while
// the agent restarts; the next Run removes what is stale.
func (c *Controller) Run(ctx context.Context) error {
	inf := c.o.Informers.Core().V1().Nodes()
	c.nodes = inf.Lister()
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.poke() },
		UpdateFunc: func(old, cur any) { c.poke() },
		DeleteFunc: func(any) { c.poke() },
	}); err != nil {
		return fmt.Errorf("routes: watch nodes: %w", err)
	}
	if !c.o.ServerOnly {
		if err := c.forward(); err != nil {
			return fmt.Errorf("routes: %w", err)
		}
	}
	if c.masq == nil && c.o.ClusterCIDR.IsValid() {
		m, err := NewMasquerade()
		if err != nil {
			return fmt.Errorf("routes: %w", err)
		}
		defer m.Close()
		c.masq = m
	}
	c.o.Informers.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	if c.o.ServerOnly {
		c.o.Logger.Info("pod network routes running for the control plane", "address", c.o.NodeIP)
	} else {
		c.o.Logger.Info("pod network routes running", "node", c.o.NodeName, "mode", c.o.Mode, "clusterCIDR", c.o.ClusterCIDR)
	}
	resync := time.NewTicker(c.o.Resync)
	defer resync.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			if r, ok := c.routes.(interface{ Close() }); ok {
				r.Close()
			}
			return nil
		case <-c.kick:
		case <-resync.C:
		case <-retry.C:
		}
		if err := c.sync(); err != nil {
			c.o.Logger.Warn("pod network routes not in line yet; retrying", "err", err, "after", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
	}
}

func (c *Controller) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// sync builds the desired state from the cached Nodes and applies it.
func (c *Controller) sync() (err error) {
	start := time.Now()
	defer func() {
		c.duration.Observe(time.Since(start).Seconds())
		result := "ok"
		if err != nil {
			result = "error"
		}
		c.syncs.WithLabelValues(result).Inc()
	}()
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	d, skipped := Build(c.o.NodeName, c.o.NodeIP, nodes)
	for _, s := range skipped {
		c.o.Logger.Debug("node not routed yet", "reason", s)
	}
	if !d.Self.NodeIP.IsValid() {
		return fmt.Errorf("node %s has no IPv4 address yet", c.o.NodeName)
	}
	if c.routes == nil {
		r, err := c.newRoutes(c.o.Mode, d.Self.NodeIP)
		if err != nil {
			return err
		}
		c.routes = r
	}
	var errs []error
	if err := c.routes.Apply(d); err != nil {
		errs = append(errs, err)
	}
	if c.masq != nil {
		if err := c.masq.Apply(c.o.ClusterCIDR, d.NodeIPs); err != nil {
			errs = append(errs, err)
		}
	}
	c.peers.Set(float64(len(d.Peers)))
	return errors.Join(errs...)
}

// WaitForPodCIDR waits until the control plane has given node a pod range
// and returns it; the agent installs the CNI configuration with it.
func WaitForPodCIDR(ctx context.Context, client kubernetes.Interface, node string) (netip.Prefix, error) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		// Errors (the Node not registered yet, an API hiccup) are waited
		// out; the deadline is ctx's.
		if n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
			if p := PodCIDR(n); p.IsValid() {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			return netip.Prefix{}, fmt.Errorf("node %s got no pod range (spec.podCIDR): is the controller manager allocating node CIDRs (--cluster-cidr)? %w", node, ctx.Err())
		case <-tick.C:
		}
	}
}
