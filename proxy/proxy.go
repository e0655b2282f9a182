// Package proxy is Skiff's replacement for kube-proxy: it watches Services
// and EndpointSlices, computes the node's frontends (proxy/model) and keeps
// the eBPF load balancer's maps equal to them (proxy/lbmap), Service by
// Service, so a change costs in proportion to what changed.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/proxy/healthcheck"
	"github.com/skiffnet/skiff/proxy/lbmap"
	"github.com/skiffnet/skiff/proxy/model"
)

// Options configure a Proxy.
type Options struct {
	Client kubernetes.Interface
	// Informers is the agent's shared factory; when nil the Proxy makes
	// its own from Client. Run starts it either way.
	Informers informers.SharedInformerFactory

	NodeName string
	NodeIPs  []netip.Addr // addresses NodePorts answer on

	// CgroupPath is the node's cgroup2 directory: the socket programs act
	// on every process and pod below it and on nothing else.
	CgroupPath string
	// PinDir is the node's directory on a bpf filesystem, where maps and
	// program links stay pinned across agent restarts.
	PinDir string

	// Redirects sends a Service to a node-local address instead of its
	// endpoints (see model.Options).
	Redirects map[types.NamespacedName]netip.Addr

	// ExternalInterfaces are the interfaces traffic from outside enters
	// the node by (in the agent's network namespace), each with the
	// address remote backends' replies come back to. The tc programs that
	// balance NodePorts, externalIPs and LoadBalancer IPs for that traffic
	// attach to them. None: only the node's own sockets are balanced, and
	// tc programs an earlier run attached are removed.
	ExternalInterfaces []bpf.Interface
	// ConntrackGCInterval is how often expired conntrack entries of the
	// tc programs are deleted (default 15 s).
	ConntrackGCInterval time.Duration
	// HealthCheckAddr is where healthCheckNodePorts listen; the zero value
	// means every address, as kube-proxy.
	HealthCheckAddr netip.Addr

	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
}

// Proxy keeps one node's service load balancer in step with the cluster.
type Proxy struct {
	opts     Options
	log      *slog.Logger
	objs     *bpf.Objects
	nodePort *bpf.NodePort // nil without ExternalInterfaces
	// attachPending: an external interface did not exist yet (only the GC
	// goroutine reads it after Run starts).
	attachPending bool
	health        *healthcheck.Server
	applier       *lbmap.Applier
	factory       informers.SharedInformerFactory
	services      corelisters.ServiceLister
	slices        cache.Indexer
	synced        []cache.InformerSynced
	queue         workqueue.TypedRateLimitingInterface[types.NamespacedName]
	metrics       *metrics

	mu      sync.Mutex
	pending map[types.NamespacedName]time.Time // first change not yet in the maps
}

const byService = "service"

// New loads the programs over the maps pinned in opts.PinDir (keeping what
// an earlier run wrote), attaches them to opts.CgroupPath and registers
// informers; nothing is changed in the maps until Run.
func New(opts Options) (*Proxy, error) {
	switch {
	case opts.Client == nil && opts.Informers == nil:
		return nil, errors.New("proxy: Options.Client is required")
	case opts.NodeName == "":
		return nil, errors.New("proxy: Options.NodeName is required")
	case opts.CgroupPath == "" || opts.PinDir == "":
		return nil, errors.New("proxy: Options.CgroupPath and Options.PinDir are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Proxy{
		opts:    opts,
		log:     opts.Logger,
		factory: opts.Informers,
		pending: map[types.NamespacedName]time.Time{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "proxy"}),
	}
	if p.factory == nil {
		p.factory = informers.NewSharedInformerFactory(opts.Client, 0)
	}
	svcs := p.factory.Core().V1().Services()
	eps := p.factory.Discovery().V1().EndpointSlices()
	err := eps.Informer().AddIndexers(cache.Indexers{byService: func(obj any) ([]string, error) {
		if n, ok := model.ServiceName(obj.(*discoveryv1.EndpointSlice)); ok {
			return []string{n.String()}, nil
		}
		return nil, nil
	}})
	if err != nil {
		return nil, fmt.Errorf("proxy: index EndpointSlices by Service (register before the factory starts): %w", err)
	}
	p.services, p.slices = svcs.Lister(), eps.Informer().GetIndexer()
	p.synced = []cache.InformerSynced{svcs.Informer().HasSynced, eps.Informer().HasSynced}
	if _, err := svcs.Informer().AddEventHandler(handler(p.enqueueService)); err != nil {
		return nil, err
	}
	if _, err := eps.Informer().AddEventHandler(handler(p.enqueueSlice)); err != nil {
		return nil, err
	}

	objs, err := bpf.Load(opts.PinDir)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	snap, err := lbmap.Read(&objs.Maps)
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	// Attach after reading: a restart keeps balancing with the maps as
	// they are until the first sync changes them.
	if err := objs.Attach(opts.CgroupPath); err != nil {
		objs.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p.objs = objs
	if err := p.attachNodePort(); err != nil {
		objs.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p.health = healthcheck.New(opts.HealthCheckAddr, p.log)
	p.applier = lbmap.New(lbmap.TablesOf(&objs.Maps), snap)
	p.metrics = newMetrics(&objs.Maps, p.nodePort)
	if opts.Registerer != nil {
		if err := p.metrics.register(opts.Registerer); err != nil {
			p.closeObjects()
			return nil, fmt.Errorf("proxy: register metrics: %w", err)
		}
	}
	p.log.Info("service load balancer loaded", "pins", opts.PinDir, "cgroup", opts.CgroupPath,
		"externalInterfaces", opts.ExternalInterfaces,
		"restoredFrontends", len(snap.Services), "restoredBackends", len(snap.Backends))
	return p, nil
}

// attachNodePort loads the tc programs and attaches them to the external
// interfaces, or detaches what an earlier run attached when there are none.
func (p *Proxy) attachNodePort() error {
	if len(p.opts.ExternalInterfaces) == 0 {
		return bpf.DetachNodePort(p.opts.PinDir)
	}
	np, err := p.objs.LoadNodePort()
	if err != nil {
		return err
	}
	err = np.Attach(p.opts.ExternalInterfaces)
	switch {
	case errors.Is(err, bpf.ErrInterfaceMissing):
		// A device made later (the VXLAN overlay's): retried with GC.
		p.log.Info("service load balancer: external interface not there yet", "err", err)
		p.attachPending = true
	case err != nil:
		np.Close()
		return err
	}
	p.nodePort = np
	return nil
}

func (p *Proxy) closeObjects() error {
	var errs []error
	if p.nodePort != nil {
		errs = append(errs, p.nodePort.Close())
	}
	return errors.Join(append(errs, p.objs.Close())...)
}

// gcConntrack deletes the tc programs' expired conntrack entries until ctx
// ends. The table is an LRU, so a slow GC costs memory, not correctness.
func (p *Proxy) gcConntrack(ctx context.Context) {
	every := p.opts.ConntrackGCInterval
	if every <= 0 {
		every = 15 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.attachPending {
			// Attach runs in this thread's network namespace: the agent's,
			// which its whole process shares.
			err := p.nodePort.Attach(p.opts.ExternalInterfaces)
			p.attachPending = errors.Is(err, bpf.ErrInterfaceMissing)
			if err == nil {
				p.log.Info("service load balancer: tc programs attached", "interfaces", p.opts.ExternalInterfaces)
			} else if !p.attachPending {
				p.log.Error("attach tc programs", "err", err)
			}
		}
		deleted, left, err := p.nodePort.GC()
		if err != nil {
			p.log.Error("conntrack garbage collection", "err", err)
			continue
		}
		p.metrics.observeConntrack(deleted, left)
		if deleted > 0 {
			p.log.Debug("conntrack garbage collection", "deleted", deleted, "entries", left)
		}
	}
}

func handler(enqueue func(obj any)) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			enqueue(obj)
		},
	}
}

func (p *Proxy) enqueueService(obj any) {
	if s, ok := obj.(*v1.Service); ok {
		p.enqueue(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
	}
}

func (p *Proxy) enqueueSlice(obj any) {
	if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
		if n, ok := model.ServiceName(s); ok {
			p.enqueue(n)
		}
	}
}

func (p *Proxy) enqueue(n types.NamespacedName) {
	p.mu.Lock()
	if _, ok := p.pending[n]; !ok {
		p.pending[n] = time.Now()
	}
	p.mu.Unlock()
	p.queue.Add(n)
}

// Run syncs every Service once, removes what the maps hold for Services
// that no longer exist, then applies changes as they come until ctx ends.
func (p *Proxy) Run(ctx context.Context) error {
	defer p.queue.ShutDown()
	p.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), p.synced...) {
		return fmt.Errorf("proxy: informers did not sync: %w", ctx.Err())
	}
	start := time.Now()
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("proxy: list Services: %w", err)
	}
	var errs []error
	for _, s := range svcs {
		errs = append(errs, p.sync(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}))
	}
	if err := errors.Join(append(errs, p.applier.Prune())...); err != nil {
		// Not fatal: the queue retries Services that failed.
		p.log.Error("full sync of the service load balancer", "err", err)
	}
	p.metrics.observeOccupancy(p.applier)
	took := time.Since(start)
	p.metrics.fullSync.Observe(took.Seconds())
	f, b, _ := p.applier.Occupancy()
	p.log.Info("service load balancer synced", "services", len(svcs), "frontends", f, "backends", b, "took", took)

	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
	}()
	if p.nodePort != nil {
		go p.gcConntrack(ctx)
	}
	for p.next() {
	}
	return nil
}

func (p *Proxy) next() bool {
	n, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(n)
	if err := p.sync(n); err != nil {
		p.log.Error("sync Service to the load balancer", "service", n, "err", err)
		p.queue.AddRateLimited(n)
		return true
	}
	p.queue.Forget(n)
	return true
}

// sync applies Service n as the informer caches have it now.
func (p *Proxy) sync(n types.NamespacedName) error {
	start := time.Now()
	p.mu.Lock()
	since, changed := p.pending[n]
	delete(p.pending, n)
	p.mu.Unlock()

	var fs []model.Frontend
	var hcPort uint16
	var hcLocal int
	svc, err := p.services.Services(n.Namespace).Get(n.Name)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	default:
		objs, err := p.slices.ByIndex(byService, n.String())
		if err != nil {
			return err
		}
		eps := make([]*discoveryv1.EndpointSlice, 0, len(objs))
		for _, o := range objs {
			eps = append(eps, o.(*discoveryv1.EndpointSlice))
		}
		node := model.Node{Name: p.opts.NodeName, IPs: p.opts.NodeIPs}
		fs = model.Service(svc, eps, node, model.Options{Redirects: p.opts.Redirects})
		hcPort, hcLocal = model.HealthCheck(svc, eps, p.opts.NodeName)
	}
	// A health check port that cannot be opened does not hold up the
	// maps; the Service is retried with backoff for it.
	hcErr := p.health.Sync(n, hcPort, hcLocal)
	requeue, err := p.applier.Apply(n, fs)
	for _, r := range requeue {
		p.enqueue(r)
	}
	if err != nil {
		p.metrics.syncErrors.Inc()
		return err
	}
	p.metrics.sync.Observe(time.Since(start).Seconds())
	if changed {
		p.metrics.programming.Observe(time.Since(since).Seconds())
	}
	p.metrics.observeOccupancy(p.applier)
	return hcErr
}

// Entries lists what the kernel's maps hold now.
func (p *Proxy) Entries() ([]lbmap.Entry, error) {
	snap, err := lbmap.Read(&p.objs.Maps)
	if err != nil {
		return nil, err
	}
	return snap.Entries(), nil
}

// Close releases this process's handles. The programs stay attached and
// the maps pinned, so the node keeps balancing until the agent is back;
// bpf.Remove(PinDir) takes everything away.
func (p *Proxy) Close() error {
	if p.opts.Registerer != nil {
		p.metrics.unregister(p.opts.Registerer)
	}
	p.health.Close()
	return p.closeObjects()
}

// Entries lists what the maps pinned in pinDir hold, for `skiff agent
// services` to print (lbmap.Print) while the agent runs or after it stopped.
func Entries(pinDir string) ([]lbmap.Entry, error) {
	m, err := bpf.OpenPinned(pinDir)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	snap, err := lbmap.Read(m)
	if err != nil {
		return nil, err
	}
	return snap.Entries(), nil
}
