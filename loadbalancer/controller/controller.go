// Package controller runs the load balancer's allocator in the server:
// informers on Services, Nodes, Pods (for hostPorts), LoadBalancerPools
// and Gateways feed loadbalancer/pool, and the result is written to each
// Service's status.loadBalancer.ingress and conditions, each Gateway's
// address annotation, each pool's status, and events. It runs once per cluster, and every change re-runs the whole
// allocation from one snapshot, which is what keeps an address from being
// handed out twice.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/skiffnet/skiff/loadbalancer/api"
	"github.com/skiffnet/skiff/loadbalancer/pool"
)

// Options configure the controller.
type Options struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Gateway, when set, lets Gateways of Skiff's classes take addresses
	// from the pools that serve Gateways.
	Gateway gatewayclient.Interface
	// Reserved are the cluster's ranges no pool may overlap
	// (--service-cidr, --cluster-cidr).
	Reserved []pool.Reserved
	// NodePorts are the ports the agents' own daemons hold on every node;
	// nil means DefaultNodePorts.
	NodePorts []pool.NamedPort
	Logger    *slog.Logger
}

// DefaultNodePorts are what `skiff agent` listens on by default: a
// Service given NODE_IP:PORT would capture that port's traffic in the tc
// programs and cut the node's DNS, ingress proxy, kubelet or metrics off.
var DefaultNodePorts = []pool.NamedPort{
	{Port: pool.Port{Number: 53, Proto: v1.ProtocolUDP}, By: "the node's cluster DNS"},
	{Port: pool.Port{Number: 53, Proto: v1.ProtocolTCP}, By: "the node's cluster DNS"},
	{Port: pool.Port{Number: 80, Proto: v1.ProtocolTCP}, By: "the node's ingress proxy"},
	{Port: pool.Port{Number: 443, Proto: v1.ProtocolTCP}, By: "the node's ingress proxy"},
	{Port: pool.Port{Number: 10248, Proto: v1.ProtocolTCP}, By: "the kubelet's health port"},
	{Port: pool.Port{Number: 10249, Proto: v1.ProtocolTCP}, By: "the agent's metrics"},
	{Port: pool.Port{Number: 10250, Proto: v1.ProtocolTCP}, By: "the kubelet"},
}

// Controller allocates LoadBalancer addresses.
type Controller struct {
	opts     Options
	log      *slog.Logger
	factory  informers.SharedInformerFactory
	dfactory dynamicinformer.DynamicSharedInformerFactory
	services corelisters.ServiceLister
	nodes    corelisters.NodeLister
	pods     corelisters.PodLister
	pools    cache.GenericLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	events   record.EventRecorder
	gw       *gateways // nil without Options.Gateway
	bcast    record.EventBroadcaster

	mu sync.Mutex
	// written holds Service statuses this controller wrote that the
	// informer has not shown yet, keyed by name, with the resourceVersion
	// the write replaced: the next run must not see a stale status and
	// hand the address out again.
	written map[types.NamespacedName]written
}

type written struct {
	before string
	status v1.ServiceStatus
}

const queueKey = "all"

// New registers the informers; Run starts them.
func New(opts Options) (*Controller, error) {
	if opts.NodePorts == nil {
		opts.NodePorts = DefaultNodePorts
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		opts: opts, log: opts.Logger,
		factory:  informers.NewSharedInformerFactory(opts.Client, 0),
		dfactory: dynamicinformer.NewDynamicSharedInformerFactory(opts.Dynamic, 0),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "loadbalancer-addresses"}),
		written: map[types.NamespacedName]written{},
	}
	svc, node, pod := c.factory.Core().V1().Services(), c.factory.Core().V1().Nodes(), c.factory.Core().V1().Pods()
	pools := c.dfactory.ForResource(api.PoolGVR)
	c.services, c.nodes, c.pods, c.pools = svc.Lister(), node.Lister(), pod.Lister(), pools.Lister()
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.queue.Add(queueKey) },
		UpdateFunc: func(any, any) { c.queue.Add(queueKey) },
		DeleteFunc: func(any) { c.queue.Add(queueKey) },
	}
	// Pods matter only for their hostPorts in node-address mode.
	podKick := cache.FilteringResourceEventHandler{FilterFunc: hasHostPort, Handler: kick}
	for _, h := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{{svc.Informer(), kick}, {node.Informer(), kick}, {pod.Informer(), podKick}, {pools.Informer(), kick}} {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("load balancer controller: %w", err)
		}
		c.synced = append(c.synced, h.inf.HasSynced)
	}
	if opts.Gateway != nil {
		gw, synced, err := newGateways(opts.Gateway, kick)
		if err != nil {
			return nil, err
		}
		c.gw, c.synced = gw, append(c.synced, synced...)
	}
	// Events name Gateways too, so the recorder's scheme knows their kind.
	sch := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{scheme.AddToScheme, gatewayv1.Install} {
		if err := add(sch); err != nil {
			return nil, fmt.Errorf("load balancer controller: %w", err)
		}
	}
	c.bcast = record.NewBroadcaster()
	c.events = c.bcast.NewRecorder(sch, v1.EventSource{Component: "skiff-loadbalancer"})
	return c, nil
}

func hasHostPort(obj any) bool {
	p, ok := obj.(*v1.Pod)
	if !ok {
		return true // a tombstone: let the run see the pod gone
	}
	for _, ctr := range p.Spec.Containers {
		for _, port := range ctr.Ports {
			if port.HostPort != 0 {
				return true
			}
		}
	}
	return false
}

// Run allocates until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	c.bcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.opts.Client.CoreV1().Events("")})
	defer c.bcast.Shutdown()
	c.factory.Start(ctx.Done())
	c.dfactory.Start(ctx.Done())
	if c.gw != nil {
		c.gw.factory.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("load balancer controller: caches did not sync: %w", ctx.Err())
	}
	context.AfterFunc(ctx, c.queue.ShutDown)
	c.log.Info("allocating LoadBalancer addresses")
	for {
		key, shutdown := c.queue.Get()
		if shutdown {
			return nil
		}
		if err := c.sync(ctx); err != nil {
			c.log.Warn("allocating LoadBalancer addresses; retrying", "err", err)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

// Reserved names the cluster ranges from the server's flags.
func Reserved(serviceCIDR, clusterCIDR string) []pool.Reserved {
	var out []pool.Reserved
	for _, r := range []struct{ name, cidr string }{{"--service-cidr", serviceCIDR}, {"--cluster-cidr", clusterCIDR}} {
		if p, err := netip.ParsePrefix(r.cidr); err == nil {
			out = append(out, pool.Reserved{Name: r.name, Prefix: p})
		}
	}
	return out
}
