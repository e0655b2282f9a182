// Package controller watches the objects Skiff's ingress is built from,
// rebuilds the route table when they change (debounced, so a burst of
// changes costs one rebuild), hands it to the proxy and reports back in
// the objects' status.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/skiffnet/skiff/ingress/routes"
)

// Options configure a Controller.
type Options struct {
	Client kubernetes.Interface
	// Gateway enables the Gateway API; nil leaves it out.
	Gateway gatewayclient.Interface
	// Factory is the informer factory to share (the agent's); nil makes
	// one. Run starts it either way.
	Factory informers.SharedInformerFactory
	// ClassName and Controller select Ingresses (routes.ClassName and
	// routes.Controller by default); GatewayController selects
	// GatewayClasses (routes.GatewayController).
	ClassName         string
	Controller        string
	GatewayController string
	// NodeIPs are written to the status of served Ingresses and Gateways.
	// Empty: the InternalIPs of all Ready nodes, which every agent computes
	// alike, so agents do not overwrite each other's status.
	NodeIPs []string
	// HTTPPort and HTTPSPort are the proxy's ports; Gateway listeners on
	// other ports are not programmed (defaults 80 and 443).
	HTTPPort, HTTPSPort int32
	// Debounce is how long the controller waits for more changes before
	// rebuilding (default 100ms); MaxDelay bounds that wait under a steady
	// stream of changes (default 500ms).
	Debounce, MaxDelay time.Duration
	// Swap receives every new table.
	Swap   func(*routes.Table)
	Logger *slog.Logger
	// DisableStatus turns off status writes (benchmarks, read-only RBAC).
	DisableStatus bool
}

// Controller turns watched objects into route tables.
type Controller struct {
	opts    Options
	log     *slog.Logger
	factory informers.SharedInformerFactory
	secrets informers.SharedInformerFactory

	ingresses      networkinglisters.IngressLister
	ingressClasses networkinglisters.IngressClassLister
	services       corelisters.ServiceLister
	slices         discoverylisters.EndpointSliceLister
	secretLister   corelisters.SecretLister
	nodes          corelisters.NodeLister
	synced         []cache.InformerSynced

	gw *gatewayWatch

	certs   routes.CertCache
	trigger chan struct{}
	// written remembers the status last written per object, so an object
	// whose status already matches is not written again.
	written map[string]string
}

// New registers the informers; Run starts them.
func New(opts Options) (*Controller, error) {
	if opts.Client == nil {
		return nil, errors.New("ingress controller: no client")
	}
	if opts.Swap == nil {
		return nil, errors.New("ingress controller: no Swap")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Debounce == 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = 500 * time.Millisecond
	}
	if opts.HTTPPort == 0 {
		opts.HTTPPort = 80
	}
	if opts.HTTPSPort == 0 {
		opts.HTTPSPort = 443
	}
	c := &Controller{
		opts:    opts,
		log:     opts.Logger,
		factory: opts.Factory,
		trigger: make(chan struct{}, 1),
		written: map[string]string{},
	}
	if c.factory == nil {
		c.factory = informers.NewSharedInformerFactory(opts.Client, 0)
	}
	// Only TLS Secrets: the rest (tokens, passwords) has no business in
	// the proxy's memory.
	c.secrets = informers.NewSharedInformerFactoryWithOptions(opts.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)).String()
		}))

	ing := c.factory.Networking().V1().Ingresses()
	ic := c.factory.Networking().V1().IngressClasses()
	svc := c.factory.Core().V1().Services()
	es := c.factory.Discovery().V1().EndpointSlices()
	sec := c.secrets.Core().V1().Secrets()
	c.ingresses, c.ingressClasses, c.services, c.slices, c.secretLister =
		ing.Lister(), ic.Lister(), svc.Lister(), es.Lister(), sec.Lister()
	for _, inf := range []cache.SharedIndexInformer{ing.Informer(), ic.Informer(), svc.Informer(), es.Informer(), sec.Informer()} {
		if _, err := inf.AddEventHandler(c.handler()); err != nil {
			return nil, fmt.Errorf("ingress controller: %w", err)
		}
		c.synced = append(c.synced, inf.HasSynced)
	}
	if len(opts.NodeIPs) == 0 && !opts.DisableStatus {
		nodes := c.factory.Core().V1().Nodes()
		c.nodes = nodes.Lister()
		if _, err := nodes.Informer().AddEventHandler(c.handler()); err != nil {
			return nil, fmt.Errorf("ingress controller: %w", err)
		}
		c.synced = append(c.synced, nodes.Informer().HasSynced)
	}
	if opts.Gateway != nil {
		gw, err := newGatewayWatch(c, opts.Gateway)
		if err != nil {
			return nil, err
		}
		c.gw = gw
	}
	return c, nil
}

// handler triggers a rebuild on any change that can matter. Updates that
// only touch an object's status (often our own writes) are ignored.
func (c *Controller) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.kick() },
		UpdateFunc: func(old, cur any) {
			if !relevantUpdate(old, cur) {
				return
			}
			c.kick()
		},
		DeleteFunc: func(any) { c.kick() },
	}
}

func relevantUpdate(old, cur any) bool {
	o, ok1 := old.(metav1.Object)
	n, ok2 := cur.(metav1.Object)
	if !ok1 || !ok2 {
		return true
	}
	if rv := n.GetResourceVersion(); rv != "" && rv == o.GetResourceVersion() {
		return false // a resync
	}
	switch cur.(type) {
	case *corev1.Node:
		return !reflect.DeepEqual(nodeAddress(old.(*corev1.Node)), nodeAddress(cur.(*corev1.Node)))
	case *corev1.Service, *discoveryv1.EndpointSlice, *corev1.Secret:
		return true
	}
	// Ingresses and Gateway objects carry a generation that moves with
	// their spec; status writes leave it alone.
	if o.GetGeneration() != 0 && o.GetGeneration() == n.GetGeneration() &&
		reflect.DeepEqual(o.GetAnnotations(), n.GetAnnotations()) && o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp()) {
		return false
	}
	return true
}

func (c *Controller) kick() {
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

// Run starts the informers, waits for their caches and rebuilds on every
// change until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.factory.Start(ctx.Done())
	c.secrets.Start(ctx.Done())
	synced := c.synced
	if c.gw != nil {
		c.gw.start(ctx)
		synced = append(synced, c.gw.synced...)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("ingress controller: caches did not sync: %w", ctx.Err())
	}
	c.log.Info("ingress controller caches synced")
	c.rebuild(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.trigger:
		}
		// Debounce: rebuild once things are quiet for Debounce, or after
		// MaxDelay at the latest.
		deadline := time.NewTimer(c.opts.MaxDelay)
		quiet := time.NewTimer(c.opts.Debounce)
	wait:
		for {
			select {
			case <-ctx.Done():
				deadline.Stop()
				quiet.Stop()
				return nil
			case <-c.trigger:
				quiet.Reset(c.opts.Debounce)
			case <-quiet.C:
				break wait
			case <-deadline.C:
				break wait
			}
		}
		deadline.Stop()
		quiet.Stop()
		c.rebuild(ctx)
	}
}

// rebuild compiles the current objects, swaps the table in and writes
// status.
func (c *Controller) rebuild(ctx context.Context) {
	start := time.Now()
	in := routes.Input{
		ClassName:  c.opts.ClassName,
		Controller: c.opts.Controller,
		Certs:      &c.certs,
	}
	var err error
	if in.Ingresses, err = c.ingresses.List(labels.Everything()); err != nil {
		c.log.Error("listing ingresses", "err", err)
		return
	}
	in.IngressClasses, _ = c.ingressClasses.List(labels.Everything())
	in.Services, _ = c.services.List(labels.Everything())
	in.EndpointSlices, _ = c.slices.List(labels.Everything())
	in.Secrets, _ = c.secretLister.List(labels.Everything())
	if c.gw != nil {
		in.Gateway = c.gw.input()
	}
	res := routes.Build(in)
	c.opts.Swap(res.Table)
	c.log.Debug("ingress table rebuilt", "routes", res.Table.Routes(), "took", time.Since(start))
	for _, p := range res.Problems {
		c.log.Debug("ingress configuration problem", "object", p.Object, "problem", p.Message)
	}
	if c.opts.DisableStatus {
		return
	}
	addrs := c.addresses()
	c.ingressStatus(ctx, res.Ingresses, addrs)
	if c.gw != nil && res.Gateway != nil {
		c.gw.writeStatus(ctx, res.Gateway, addrs)
	}
}
