package controller

import (
	"context"
	"fmt"
	"reflect"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
	gatewaylistersv1beta1 "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1beta1"

	"github.com/skiffnet/skiff/ingress/routes"
)

// gatewayWatch is the Gateway API half of the controller.
type gatewayWatch struct {
	c       *Controller
	client  gatewayclient.Interface
	factory gatewayinformers.SharedInformerFactory

	classes    gatewaylisters.GatewayClassLister
	gateways   gatewaylisters.GatewayLister
	routes     gatewaylisters.HTTPRouteLister
	grants     gatewaylistersv1beta1.ReferenceGrantLister
	namespaces corelisters.NamespaceLister
	synced     []cache.InformerSynced
}

func newGatewayWatch(c *Controller, client gatewayclient.Interface) (*gatewayWatch, error) {
	g := &gatewayWatch{c: c, client: client, factory: gatewayinformers.NewSharedInformerFactory(client, 0)}
	v1 := g.factory.Gateway().V1()
	gc, gw, hr := v1.GatewayClasses(), v1.Gateways(), v1.HTTPRoutes()
	rg := g.factory.Gateway().V1beta1().ReferenceGrants()
	ns := c.factory.Core().V1().Namespaces()
	g.classes, g.gateways, g.routes, g.grants, g.namespaces = gc.Lister(), gw.Lister(), hr.Lister(), rg.Lister(), ns.Lister()
	for _, inf := range []cache.SharedIndexInformer{gc.Informer(), gw.Informer(), hr.Informer(), rg.Informer(), ns.Informer()} {
		if _, err := inf.AddEventHandler(c.handler()); err != nil {
			return nil, fmt.Errorf("gateway controller: %w", err)
		}
		g.synced = append(g.synced, inf.HasSynced)
	}
	return g, nil
}

func (g *gatewayWatch) start(ctx context.Context) {
	g.factory.Start(ctx.Done())
	// the namespace informer lives on the shared factory: start it late
	g.c.factory.Start(ctx.Done())
}

func (g *gatewayWatch) input() *routes.GatewayInput {
	in := &routes.GatewayInput{
		ControllerName: g.c.opts.GatewayController,
		HTTPPort:       g.c.opts.HTTPPort,
		HTTPSPort:      g.c.opts.HTTPSPort,
	}
	in.Classes, _ = g.classes.List(labels.Everything())
	in.Gateways, _ = g.gateways.List(labels.Everything())
	in.HTTPRoutes, _ = g.routes.List(labels.Everything())
	in.ReferenceGrants, _ = g.grants.List(labels.Everything())
	in.Namespaces, _ = g.namespaces.List(labels.Everything())
	return in
}

// mergeConditions sets want on a copy of have, keeping the transition
// time of conditions whose status did not change.
func mergeConditions(have, want []metav1.Condition) []metav1.Condition {
	out := append([]metav1.Condition(nil), have...)
	for _, c := range want {
		meta.SetStatusCondition(&out, c)
	}
	return out
}

func (g *gatewayWatch) writeStatus(ctx context.Context, st *routes.GatewayStatus, addrs []string) {
	failed := false
	warn := func(kind, name string, err error) {
		g.c.log.Warn("writing gateway status", "kind", kind, "name", name, "err", err)
		failed = true
	}
	for name, conds := range st.Classes {
		gc, err := g.classes.Get(name)
		if err != nil {
			continue
		}
		merged := mergeConditions(gc.Status.Conditions, conds)
		if reflect.DeepEqual(merged, gc.Status.Conditions) {
			continue
		}
		u := gc.DeepCopy()
		u.Status.Conditions = merged
		if _, err := g.client.GatewayV1().GatewayClasses().UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			warn("GatewayClass", name, err)
		}
	}
	ipType := gatewayv1.IPAddressType
	var statusAddrs []gatewayv1.GatewayStatusAddress
	for _, a := range addrs {
		statusAddrs = append(statusAddrs, gatewayv1.GatewayStatusAddress{Type: &ipType, Value: a})
	}
	for key, want := range st.Gateways {
		gw, err := g.gateways.Gateways(key.Namespace).Get(key.Name)
		if err != nil {
			continue
		}
		u := gw.DeepCopy()
		u.Status.Addresses = statusAddrs
		if len(want.Addresses) > 0 {
			u.Status.Addresses = want.Addresses
		}
		if notAssigned(want) {
			u.Status.Addresses = nil
		}
		u.Status.Conditions = mergeConditions(gw.Status.Conditions, want.Conditions)
		var ls []gatewayv1.ListenerStatus
		for _, l := range want.Listeners {
			var have []metav1.Condition
			for _, old := range gw.Status.Listeners {
				if old.Name == l.Name {
					have = old.Conditions
				}
			}
			l.Conditions = mergeConditions(have, l.Conditions)
			ls = append(ls, l)
		}
		u.Status.Listeners = ls
		if reflect.DeepEqual(u.Status, gw.Status) {
			continue
		}
		if _, err := g.client.GatewayV1().Gateways(key.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			warn("Gateway", key.String(), err)
		}
	}
	ctrl := gatewayv1.GatewayController(g.c.opts.GatewayController)
	if ctrl == "" {
		ctrl = routes.GatewayController
	}
	all, _ := g.routes.List(labels.Everything())
	for _, hr := range all {
		key := types.NamespacedName{Namespace: hr.Namespace, Name: hr.Name}
		want := st.Routes[key]
		// Keep other controllers' entries; replace ours.
		var parents []gatewayv1.RouteParentStatus
		var mine []gatewayv1.RouteParentStatus
		for _, p := range hr.Status.Parents {
			if p.ControllerName != ctrl {
				parents = append(parents, p)
			} else {
				mine = append(mine, p)
			}
		}
		if len(want) == 0 && len(mine) == 0 {
			continue
		}
		for _, w := range want {
			var have []metav1.Condition
			for _, m := range mine {
				if reflect.DeepEqual(m.ParentRef, w.ParentRef) {
					have = m.Conditions
				}
			}
			w.Conditions = mergeConditions(have, w.Conditions)
			parents = append(parents, w)
		}
		if parents == nil {
			parents = []gatewayv1.RouteParentStatus{}
		}
		if reflect.DeepEqual(parents, hr.Status.Parents) {
			continue
		}
		u := hr.DeepCopy()
		u.Status.Parents = parents
		if _, err := g.client.GatewayV1().HTTPRoutes(hr.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			warn("HTTPRoute", key.String(), err)
		}
	}
	if failed {
		g.c.retryLater(ctx)
	}
}

// notAssigned reports a Gateway whose address the allocator has not
// decided yet (routes.AddressPending): it gets no address in its status.
func notAssigned(st *gatewayv1.GatewayStatus) bool {
	c := meta.FindStatusCondition(st.Conditions, string(gatewayv1.GatewayConditionProgrammed))
	return c != nil && c.Reason == string(gatewayv1.GatewayReasonAddressNotAssigned)
}
