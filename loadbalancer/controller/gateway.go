package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/skiffnet/skiff/ingress/routes"
	"github.com/skiffnet/skiff/loadbalancer/pool"
)

// gateways is the Gateway half of the allocator: Gateways of the
// GatewayClasses Skiff serves take addresses in the same allocation as the
// Services, so an address never goes to both. The address is written to
// the Gateway's routes.AddressAnnotation, where the proxies (which serve
// the Gateway on it and show it in status.addresses) and the announcers
// read it.
type gateways struct {
	client   gatewayclient.Interface
	factory  gatewayinformers.SharedInformerFactory
	classes  gatewaylisters.GatewayClassLister
	gateways gatewaylisters.GatewayLister

	mu sync.Mutex
	// written overlays annotations this controller wrote that the cache
	// has not shown yet (as Controller.written does for Services).
	written map[types.NamespacedName]writtenAddr
	// reported is the last outcome recorded as an event, per Gateway:
	// a Gateway has no condition of ours to compare with.
	reported map[types.NamespacedName]string
}

type writtenAddr struct {
	before, addr string
}

func newGateways(client gatewayclient.Interface, kick cache.ResourceEventHandler) (*gateways, []cache.InformerSynced, error) {
	g := &gateways{client: client, factory: gatewayinformers.NewSharedInformerFactory(client, 0),
		written: map[types.NamespacedName]writtenAddr{}, reported: map[types.NamespacedName]string{}}
	gc, gw := g.factory.Gateway().V1().GatewayClasses(), g.factory.Gateway().V1().Gateways()
	g.classes, g.gateways = gc.Lister(), gw.Lister()
	var synced []cache.InformerSynced
	for _, inf := range []cache.SharedIndexInformer{gc.Informer(), gw.Informer()} {
		if _, err := inf.AddEventHandler(kick); err != nil {
			return nil, nil, fmt.Errorf("load balancer controller: %w", err)
		}
		synced = append(synced, inf.HasSynced)
	}
	return g, synced, nil
}

// list returns the Gateways of Skiff's classes, with what this controller
// wrote overlaid.
func (g *gateways) list() ([]*gatewayv1.Gateway, error) {
	classes, err := g.classes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	ours := map[string]bool{}
	for _, c := range classes {
		ours[c.Name] = c.Spec.ControllerName == routes.GatewayController
	}
	all, err := g.gateways.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*gatewayv1.Gateway
	for _, gw := range all {
		if !ours[string(gw.Spec.GatewayClassName)] || gw.DeletionTimestamp != nil {
			continue
		}
		name := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		if w, ok := g.written[name]; ok {
			if gw.ResourceVersion != w.before {
				delete(g.written, name)
			} else {
				gw = gw.DeepCopy()
				if gw.Annotations == nil {
					gw.Annotations = map[string]string{}
				}
				gw.Annotations[routes.AddressAnnotation] = w.addr
			}
		}
		out = append(out, gw)
	}
	return out, nil
}

// write sets the Gateway's address annotation to the outcome's address,
// or removes it (the Gateway is then served on the nodes' addresses), and
// records an event when the outcome changed.
func (c *Controller) writeGateway(ctx context.Context, gw *gatewayv1.Gateway, o pool.Outcome) error {
	g := c.gw
	name := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
	// Every Gateway gets a decision: its address, or "on the nodes"
	// (routes.OnNodes), so the proxies know when to report one.
	want := routes.OnNodes
	if o.Assigned() {
		want = o.Addrs[0].String()
	}
	have := gw.Annotations[routes.AddressAnnotation]
	if have != want {
		var value any // JSON null removes the annotation
		if want != "" {
			value = want
		}
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{routes.AddressAnnotation: value}}})
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := g.client.GatewayV1().Gateways(gw.Namespace).Patch(pctx, gw.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("write the address of Gateway %s: %w", name, err)
		}
		g.mu.Lock()
		g.written[name] = writtenAddr{before: gw.ResourceVersion, addr: want}
		g.mu.Unlock()
	}
	g.mu.Lock()
	report := o.Reason + ": " + o.Message
	changed := g.reported[name] != report
	g.reported[name] = report
	g.mu.Unlock()
	// A Gateway with no pool serving Gateways and nothing asked is the
	// ordinary node-address case, not worth an event.
	quiet := o.Reason == pool.ReasonNoPool && len(gw.Spec.Addresses) == 0 && (have == "" || have == routes.OnNodes)
	if changed && !quiet {
		kind := v1.EventTypeNormal
		if !o.Assigned() {
			kind = v1.EventTypeWarning
		}
		c.events.Event(gw, kind, o.Reason, o.Message)
		c.log.Info("Gateway address", "gateway", name.String(), "addresses", o.Addrs, "reason", o.Reason, "message", o.Message)
	}
	return nil
}
