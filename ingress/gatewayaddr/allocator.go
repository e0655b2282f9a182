package gatewayaddr

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/skiffnet/skiff/ingress/routes"
)

// Allocator hands out addresses from a pool to the Gateways of Skiff's
// classes, writing each into the routes.AddressAnnotation of its Gateway.
// It runs once, in the server, so two Gateways never get the same address;
// an address stays with its Gateway until the Gateway is deleted.
type Allocator struct {
	client     gatewayclient.Interface
	pool       netip.Prefix
	controller string
	log        *slog.Logger

	factory  gatewayinformers.SharedInformerFactory
	classes  gatewaylisters.GatewayClassLister
	gateways gatewaylisters.GatewayLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
}

// queueKey is the one work item: every change re-runs the allocation over
// all Gateways, which is what keeps it free of double assignments.
const queueKey = "gateways"

// NewAllocator serves the GatewayClasses whose controllerName is
// controller ("" for routes.GatewayController) from pool.
func NewAllocator(client gatewayclient.Interface, pool netip.Prefix, controller string, log *slog.Logger) (*Allocator, error) {
	if !pool.IsValid() || pool.Bits() == pool.Addr().BitLen() {
		return nil, fmt.Errorf("gateway address pool %v: want a CIDR with room for addresses, e.g. 10.250.0.0/24", pool)
	}
	if controller == "" {
		controller = routes.GatewayController
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Allocator{
		client: client, pool: pool.Masked(), controller: controller, log: log,
		factory: gatewayinformers.NewSharedInformerFactory(client, 0),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "gateway-addresses"}),
	}
	gc, gw := a.factory.Gateway().V1().GatewayClasses(), a.factory.Gateway().V1().Gateways()
	a.classes, a.gateways = gc.Lister(), gw.Lister()
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.queue.Add(queueKey) },
		UpdateFunc: func(any, any) { a.queue.Add(queueKey) },
		DeleteFunc: func(any) { a.queue.Add(queueKey) },
	}
	for _, inf := range []cache.SharedIndexInformer{gc.Informer(), gw.Informer()} {
		if _, err := inf.AddEventHandler(kick); err != nil {
			return nil, fmt.Errorf("gateway address allocator: %w", err)
		}
		a.synced = append(a.synced, inf.HasSynced)
	}
	return a, nil
}

// Run allocates until ctx ends.
func (a *Allocator) Run(ctx context.Context) error {
	defer a.queue.ShutDown()
	a.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		return fmt.Errorf("gateway address allocator: caches did not sync: %w", ctx.Err())
	}
	go func() {
		<-ctx.Done()
		a.queue.ShutDown()
	}()
	a.log.Info("allocating Gateway addresses", "pool", a.pool)
	for {
		key, shutdown := a.queue.Get()
		if shutdown {
			return nil
		}
		if err := a.allocate(ctx); err != nil {
			a.log.Warn("allocating Gateway addresses; retrying", "err", err)
			a.queue.AddRateLimited(key)
		} else {
			a.queue.Forget(key)
		}
		a.queue.Done(key)
	}
}

// allocate gives every Gateway of ours without a usable address the lowest
// free one. Older Gateways keep their address when two claim the same.
func (a *Allocator) allocate(ctx context.Context) error {
	gws, err := a.ours()
	if err != nil {
		return err
	}
	plan := Plan(a.pool, gws)
	for _, p := range plan.Assign {
		if err := a.annotate(ctx, p.Gateway, p.Addr); err != nil {
			return err
		}
		a.log.Info("Gateway address allocated", "gateway", p.Gateway.String(), "address", p.Addr)
	}
	if plan.Exhausted > 0 {
		return fmt.Errorf("gateway address pool %s is exhausted: %d Gateways have no address; widen --gateway-cidr or delete Gateways", a.pool, plan.Exhausted)
	}
	return nil
}

func (a *Allocator) ours() ([]*gatewayv1.Gateway, error) {
	classes, err := a.classes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	for _, c := range classes {
		mine[c.Name] = string(c.Spec.ControllerName) == a.controller
	}
	all, err := a.gateways.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var out []*gatewayv1.Gateway
	for _, g := range all {
		if mine[string(g.Spec.GatewayClassName)] && g.DeletionTimestamp == nil {
			out = append(out, g)
		}
	}
	return out, nil
}

func (a *Allocator) annotate(ctx context.Context, gw types.NamespacedName, addr netip.Addr) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{routes.AddressAnnotation: addr.String()}},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = a.client.GatewayV1().Gateways(gw.Namespace).Patch(ctx, gw.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("annotate Gateway %s with address %s: %w", gw, addr, err)
	}
	return nil
}

// Assignment is one address to write.
type Assignment struct {
	Gateway types.NamespacedName
	Addr    netip.Addr
}

// Allocation is what Plan decided.
type Allocation struct {
	Assign []Assignment
	// Exhausted counts the Gateways left without an address.
	Exhausted int
}

// Plan is the allocation as a pure function of the pool and the Gateways,
// so it is tested without an API server. Gateways that ask for addresses
// in spec.addresses keep those (and they count as taken when in the pool);
// a Gateway keeps an annotated address that is in the pool and not held by
// an older Gateway; the others get the lowest free addresses, oldest first.
func Plan(pool netip.Prefix, gws []*gatewayv1.Gateway) Allocation {
	gws = append([]*gatewayv1.Gateway(nil), gws...)
	sort.Slice(gws, func(i, j int) bool { return routes.Older(gws[i], gws[j]) })
	taken := map[netip.Addr]bool{}
	for _, g := range gws {
		if len(g.Spec.Addresses) > 0 {
			if addr, ok, _ := routes.GatewayAddress(g); ok {
				taken[addr] = true
			}
		}
	}
	var need []*gatewayv1.Gateway
	for _, g := range gws {
		if len(g.Spec.Addresses) > 0 {
			continue
		}
		addr, ok, _ := routes.GatewayAddress(g)
		if ok && pool.Contains(addr) && usable(pool, addr) && !taken[addr] {
			taken[addr] = true
			continue
		}
		need = append(need, g)
	}
	var out Allocation
	next := pool.Addr()
	for _, g := range need {
		for ; pool.Contains(next) && (taken[next] || !usable(pool, next)); next = next.Next() {
		}
		if !pool.Contains(next) {
			out.Exhausted++
			continue
		}
		taken[next] = true
		out.Assign = append(out.Assign, Assignment{Gateway: types.NamespacedName{Namespace: g.Namespace, Name: g.Name}, Addr: next})
	}
	return out
}

// usable leaves out an IPv4 pool's network and broadcast addresses, which
// hosts on a routed subnet treat specially.
func usable(pool netip.Prefix, a netip.Addr) bool {
	if !a.Is4() || pool.Bits() >= 31 {
		return true
	}
	if a == pool.Addr() {
		return false
	}
	b := a.As4()
	host := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	mask := uint32(1)<<(32-pool.Bits()) - 1
	return host&mask != mask
}
