package announce

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
)

// Options configure an Announcer.
type Options struct {
	// LeaseClient returns the client the elections write Leases with,
	// waiting until it can (see TokenClient).
	LeaseClient func(context.Context) (kubernetes.Interface, error)
	Informers   informers.SharedInformerFactory
	// Gateway, when set, adds the addresses of Gateways of Skiff's
	// classes (every node is eligible for them).
	Gateway  gatewayclient.Interface
	NodeName string
	// Interface is the link on the nodes' L2 segment (the one holding the
	// node address).
	Interface string
	// LeaseNamespace holds the per-address Leases (kube-system).
	LeaseNamespace string
	Timing         Timing // zero: DefaultTiming
	// StateFile, when set, lists the addresses this node announces, one a
	// line, for `skiff agent services`.
	StateFile  string
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Announcer elects and answers for this node's share of the addresses.
type Announcer struct {
	opts     Options
	log      *slog.Logger
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	nodes    corelisters.NodeLister
	gwf      gatewayinformers.SharedInformerFactory // nil without Options.Gateway
	classes  gatewaylisters.GatewayClassLister
	gateways gatewaylisters.GatewayLister
	synced   []cache.InformerSynced
	kick     chan struct{}
	elector  *elector
	resp     *responder
	metrics  metrics

	mu        sync.Mutex
	announced map[netip.Addr]bool
}

type metrics struct {
	announced prometheus.Gauge
	takeovers prometheus.Counter
	replies   prometheus.Counter
}

// New registers the informers it needs on opts.Informers (call it before
// the factory starts) and opens the ARP socket.
func New(opts Options) (*Announcer, error) {
	if opts.Timing == (Timing{}) {
		opts.Timing = DefaultTiming
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Announcer{opts: opts, log: opts.Logger, kick: make(chan struct{}, 1), announced: map[netip.Addr]bool{}}
	a.metrics = metrics{
		announced: prometheus.NewGauge(prometheus.GaugeOpts{Name: "skiff_lb_announced_addresses", Help: "LoadBalancer addresses this node answers ARP for."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "skiff_lb_takeovers_total", Help: "Times this node took over a LoadBalancer address (won its Lease)."}),
		replies:   prometheus.NewCounter(prometheus.CounterOpts{Name: "skiff_lb_arp_replies_total", Help: "ARP replies sent for LoadBalancer addresses."}),
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{a.metrics.announced, a.metrics.takeovers, a.metrics.replies} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("load balancer announcer metrics: %w", err)
			}
		}
	}
	svc, es, node := opts.Informers.Core().V1().Services(), opts.Informers.Discovery().V1().EndpointSlices(), opts.Informers.Core().V1().Nodes()
	a.services, a.slices, a.nodes = svc.Lister(), es.Lister(), node.Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.trigger() },
		UpdateFunc: func(any, any) { a.trigger() },
		DeleteFunc: func(any) { a.trigger() },
	}
	infs := []cache.SharedIndexInformer{svc.Informer(), es.Informer(), node.Informer()}
	if opts.Gateway != nil {
		a.gwf = gatewayinformers.NewSharedInformerFactory(opts.Gateway, 0)
		gc, gw := a.gwf.Gateway().V1().GatewayClasses(), a.gwf.Gateway().V1().Gateways()
		a.classes, a.gateways = gc.Lister(), gw.Lister()
		infs = append(infs, gc.Informer(), gw.Informer())
	}
	for _, inf := range infs {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("load balancer announcer: %w", err)
		}
		a.synced = append(a.synced, inf.HasSynced)
	}
	resp, err := newResponder(opts.Interface, opts.Logger)
	if err != nil {
		return nil, err
	}
	resp.replied = a.metrics.replies.Inc
	a.resp = resp
	return a, nil
}

func (a *Announcer) trigger() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run answers ARP and runs the elections until ctx ends; leaving releases
// the Leases held, so other nodes take over at once.
func (a *Announcer) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- a.resp.serve(ctx) }()
	if a.gwf != nil {
		a.gwf.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		return fmt.Errorf("load balancer announcer: caches did not sync: %w", ctx.Err())
	}
	client, err := a.opts.LeaseClient(ctx)
	if err != nil {
		return err
	}
	a.elector = &elector{client: client, namespace: a.opts.LeaseNamespace, node: a.opts.NodeName, timing: a.opts.Timing, log: a.log, lead: a.lead}
	a.log.Info("announcing LoadBalancer addresses", "interface", a.opts.Interface, "timing", a.opts.Timing.String())
	for {
		desired, err := a.desired()
		if err != nil {
			a.log.Warn("load balancer announcer", "err", err)
		} else {
			a.elector.reconcile(ctx, desired)
		}
		select {
		case <-ctx.Done():
			a.elector.wait()
			return nil
		case err := <-errc:
			return fmt.Errorf("ARP responder on %s: %w", a.opts.Interface, err)
		case <-a.kick:
		}
	}
}

func (a *Announcer) desired() (map[netip.Addr]bool, error) {
	svcs, err := a.services.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	nodes, err := a.nodes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	nodeAddrs := map[netip.Addr]bool{}
	for _, n := range nodes {
		for _, addr := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(addr.Address); err == nil {
				nodeAddrs[ip] = true
			}
		}
	}
	slices := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range svcs {
		if s.Spec.Type != v1.ServiceTypeLoadBalancer || s.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
			continue
		}
		sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: s.Name})
		es, err := a.slices.EndpointSlices(s.Namespace).List(sel)
		if err != nil {
			return nil, err
		}
		slices[s.Namespace+"/"+s.Name] = es
	}
	out := Desired(svcs, slices, nodeAddrs, a.opts.NodeName)
	if a.gwf != nil {
		classes, err := a.classes.List(labels.Everything())
		if err != nil {
			return nil, err
		}
		gws, err := a.gateways.List(labels.Everything())
		if err != nil {
			return nil, err
		}
		for _, addr := range GatewayAddresses(classes, gws, nodeAddrs) {
			out[addr] = true
		}
	}
	return out, nil
}

// lead is the elector's callback.
func (a *Announcer) lead(addr netip.Addr, held *fence) {
	leading := held != nil
	a.mu.Lock()
	changed := a.announced[addr] != leading
	if leading {
		a.announced[addr] = true
	} else {
		delete(a.announced, addr)
	}
	n := len(a.announced)
	list := Sorted(a.announced)
	a.mu.Unlock()
	a.resp.set(addr, held)
	if !changed {
		return
	}
	a.metrics.announced.Set(float64(n))
	if leading {
		a.metrics.takeovers.Inc()
		a.log.Info("announcing LoadBalancer address (took its Lease)", "address", addr)
	} else {
		a.log.Info("no longer announcing LoadBalancer address", "address", addr)
	}
	a.writeState(list)
}

// Announced lists the addresses this node answers for.
func (a *Announcer) Announced() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Sorted(a.announced)
}

func (a *Announcer) writeState(list []netip.Addr) {
	if a.opts.StateFile == "" {
		return
	}
	var b strings.Builder
	for _, addr := range list {
		b.WriteString(addr.String() + "\n")
	}
	tmp := a.opts.StateFile + ".tmp"
	err := os.MkdirAll(filepath.Dir(a.opts.StateFile), 0o755)
	if err == nil {
		err = os.WriteFile(tmp, []byte(b.String()), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, a.opts.StateFile)
	}
	if err != nil {
		a.log.Warn("writing the announced addresses", "file", a.opts.StateFile, "err", err)
	}
}

// ReadState reads the addresses a node announces from its state file.
func ReadState(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}
