// Package netpol enforces NetworkPolicy on a node: informers feed Pods,
// Namespaces and NetworkPolicies to netpol/model, which computes what each
// local pod may send and receive; netpol/policymap writes the difference
// into the maps of the eBPF programs (bpf/policy.c) this package attaches
// to every local pod's host veth. Maps and links are pinned below the
// node's pin directory, so policy stays enforced while the agent restarts.
// Design and semantics: docs/netpol.md.
package netpol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	netlisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/netpol/model"
	"github.com/skiffnet/skiff/netpol/policymap"
)

// Options configure a Controller.
type Options struct {
	Informers informers.SharedInformerFactory
	NodeName  string
	// NodeIP is where the node-local DNS answers (the kube-dns ClusterIP is
	// sent there), matched as a kube-system DNS pod (docs/netpol.md).
	NodeIP netip.Addr
	// PinDir is the node's pin directory; policy pins go in PinDir/netpol.
	PinDir string
	// StatusFile, when set, receives what was applied (JSON), for
	// `skiff agent policy`.
	StatusFile string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Controller keeps the node's policy programs and maps in line with the
// cluster's NetworkPolicies.
type Controller struct {
	opts     Options
	log      *slog.Logger
	prog     *bpf.Policy
	model    *model.Model
	writer   *policymap.Writer
	queue    workqueue.TypedRateLimitingInterface[string]
	pods     corelisters.PodLister
	nss      corelisters.NamespaceLister
	policies netlisters.NetworkPolicyLister
	synced   []cache.InformerSynced
	metrics  *metrics

	attached []string // host veths with programs, sorted
	missing  []string // local pods without a veth at the last sync, sorted
	lastErr  string
	lastWarn string // the model's problems at the last sync
}

const syncKey = "sync"

// New loads the programs over the pinned maps and registers the informers;
// call it before the factory starts.
func New(opts Options) (*Controller, error) {
	if opts.NodeName == "" || opts.PinDir == "" || opts.Informers == nil {
		return nil, errors.New("netpol: Options.NodeName, PinDir and Informers are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	prog, err := bpf.LoadPolicy(opts.PinDir)
	if err != nil {
		return nil, err
	}
	w, err := policymap.New(prog)
	if err != nil {
		prog.Close()
		return nil, err
	}
	c := &Controller{
		opts: opts, log: opts.Logger, prog: prog, writer: w,
		model: model.NewModel(model.Options{NodeName: opts.NodeName, DNS: model.NodeDNS(opts.NodeIP)}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "netpol"}),
	}
	f := opts.Informers
	pi, ni, npi := f.Core().V1().Pods(), f.Core().V1().Namespaces(), f.Networking().V1().NetworkPolicies()
	c.pods, c.nss, c.policies = pi.Lister(), ni.Lister(), npi.Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.changed() },
		UpdateFunc: func(any, any) { c.changed() },
		DeleteFunc: func(any) { c.changed() },
	}
	for _, inf := range []cache.SharedIndexInformer{pi.Informer(), ni.Informer(), npi.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			prog.Close()
			return nil, fmt.Errorf("netpol: watch: %w", err)
		}
		c.synced = append(c.synced, inf.HasSynced)
	}
	c.metrics = newMetrics(c, opts.Registerer)
	return c, nil
}

// changed coalesces events into one sync: the model finds what changed by
// comparing the listers' objects with the ones it holds and recomputes
// only the pods that touches; the writer only writes pods whose rules
// changed.
func (c *Controller) changed() {
	c.queue.Add(syncKey)
}

// Run syncs on every change until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	c.log.Info("network policy enforcement running", "pins", c.opts.PinDir+"/"+bpf.PolicyDir)
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	// Pods get their veth a moment before their address is reported, and
	// a veth can be replaced under the same address: a periodic sync
	// catches what no event announces.
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.queue.Add(syncKey)
			}
		}
	}()
	c.queue.Add(syncKey)
	for {
		key, quit := c.queue.Get()
		if quit {
			return nil
		}
		if err := c.sync(); err != nil {
			c.metrics.syncErrors.Inc()
			if msg := err.Error(); msg != c.lastErr {
				c.log.Warn("network policy sync failed; retrying", "err", err)
				c.lastErr = msg
			}
			c.queue.AddRateLimited(key)
		} else {
			c.lastErr = ""
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

// Close releases the programs and maps of this process; pins stay.
func (c *Controller) Close() error { return c.prog.Close() }

func (c *Controller) sync() error {
	start := time.Now()
	defer func() { c.metrics.syncDuration.Observe(time.Since(start).Seconds()) }()
	var s model.State
	var err error
	if s.Pods, err = c.pods.List(labels.Everything()); err != nil {
		return err
	}
	if s.Namespaces, err = c.nss.List(labels.Everything()); err != nil {
		return err
	}
	if s.Policies, err = c.policies.List(labels.Everything()); err != nil {
		return err
	}
	eps, merr := c.model.Update(s)
	if merr != nil && merr.Error() != c.lastWarn {
		// Faulty peers match nothing; the rest is enforced.
		c.log.Warn("network policy problems", "err", merr)
	}
	c.lastWarn = ""
	if merr != nil {
		c.lastWarn = merr.Error()
	}
	// Rules first, then programs: a new pod's first packet finds them.
	if err := c.writer.Apply(eps); err != nil {
		return fmt.Errorf("write policy maps: %w", err)
	}
	c.metrics.setEndpoints(eps, len(s.Policies))
	if c.opts.StatusFile != "" {
		if err := writeStatus(c.opts.StatusFile, statusOf(eps)); err != nil {
			c.log.Debug("write policy status", "err", err)
		}
	}
	return c.attach(eps)
}

// attach puts the programs on the host veth of every local pod, and takes
// them off veths whose pods are gone.
func (c *Controller) attach(eps map[netip.Addr]*model.Endpoint) error {
	veths, err := hostVeths()
	if err != nil {
		return err
	}
	var names []string
	var missing []string
	for ip, ep := range eps {
		if name, ok := veths[ip]; ok {
			names = append(names, name)
		} else {
			missing = append(missing, ep.Pod.String())
		}
	}
	slices.Sort(names)
	if c.attached == nil || !slices.Equal(names, c.attached) {
		if err := c.prog.Attach(names); err != nil && !errors.Is(err, bpf.ErrInterfaceMissing) {
			return err
		}
		c.attached = names
	}
	slices.Sort(missing)
	if missing != nil && !slices.Equal(missing, c.missing) {
		// A pod's veth goes before its object (terminating pods), and
		// rarely comes after its address is reported: look again soon,
		// once per new set of such pods (the periodic sync does the rest).
		c.log.Debug("no host veth for pods", "pods", missing)
		c.queue.AddAfter(syncKey, time.Second)
	}
	c.missing = missing
	return nil
}
