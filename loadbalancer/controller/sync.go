package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffnet/skiff/loadbalancer/api"
	"github.com/skiffnet/skiff/loadbalancer/pool"
)

// sync runs one allocation over everything and writes what changed.
func (c *Controller) sync(ctx context.Context) error {
	in, svcs, pools, err := c.input()
	if err != nil {
		return err
	}
	var gws []*gatewayv1.Gateway
	if c.gw != nil {
		if gws, err = c.gw.list(); err != nil {
			return err
		}
		for _, g := range gws {
			in.Services = append(in.Services, pool.FromGateway(g))
		}
	}
	res := pool.Allocate(in)
	var errs []error
	for _, g := range gws {
		if err := c.writeGateway(ctx, g, res.Gateways[types.NamespacedName{Namespace: g.Namespace, Name: g.Name}]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range svcs {
		if err := c.writeService(ctx, s, res.Services[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range pools {
		if err := c.writePool(ctx, p, res.Pools[p.GetName()]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// input reads the informers' caches into the allocator's input.
func (c *Controller) input() (pool.Input, []*v1.Service, []*unstructured.Unstructured, error) {
	in := pool.Input{Reserved: c.opts.Reserved, NodePorts: c.opts.NodePorts}
	objs, err := c.pools.List(labels.Everything())
	if err != nil {
		return in, nil, nil, err
	}
	var pools []*unstructured.Unstructured
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var p api.Pool
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			// The CRD's schema makes this rare; report it on the object.
			p = api.Pool{ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), CreationTimestamp: u.GetCreationTimestamp()}}
			pp := pool.Parse(&p)
			pp.Err = fmt.Errorf("spec: %w", err)
			in.Pools = append(in.Pools, pp)
		} else {
			in.Pools = append(in.Pools, pool.Parse(&p))
		}
		pools = append(pools, u)
	}
	all, err := c.services.List(labels.Everything())
	if err != nil {
		return in, nil, nil, err
	}
	var svcs []*v1.Service
	for _, s := range all {
		if !pool.Ours(s) {
			continue
		}
		s = c.fresh(s)
		svcs = append(svcs, s)
		in.Services = append(in.Services, pool.FromService(s))
	}
	if in.Nodes, err = c.nodeView(); err != nil {
		return in, nil, nil, err
	}
	return in, svcs, pools, nil
}

// fresh overlays a status this controller wrote and the cache has not
// shown yet.
func (c *Controller) fresh(s *v1.Service) *v1.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	name := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	w, ok := c.written[name]
	if !ok {
		return s
	}
	if s.ResourceVersion != w.before {
		delete(c.written, name) // the cache caught up (or someone else wrote)
		return s
	}
	s = s.DeepCopy()
	s.Status = *w.status.DeepCopy()
	return s
}

// nodeView lists nodes with their address, readiness and the hostPorts
// their pods hold.
func (c *Controller) nodeView() ([]pool.Node, error) {
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	ports := map[string][]pool.Port{}
	for _, p := range pods {
		if p.Spec.NodeName == "" || p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
			continue
		}
		for _, ctr := range p.Spec.Containers {
			for _, cp := range ctr.Ports {
				if cp.HostPort != 0 {
					proto := cp.Protocol
					if proto == "" {
						proto = v1.ProtocolTCP
					}
					ports[p.Spec.NodeName] = append(ports[p.Spec.NodeName], pool.Port{Number: cp.HostPort, Proto: proto})
				}
			}
		}
	}
	var out []pool.Node
	for _, n := range nodes {
		pn := pool.Node{Name: n.Name, Ready: ready(n), Ports: ports[n.Name]}
		for _, a := range n.Status.Addresses {
			if a.Type == v1.NodeInternalIP {
				if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
					pn.Addr = ip
					break
				}
			}
		}
		out = append(out, pn)
	}
	return out, nil
}

func ready(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// Status is the Service status an outcome asks for, starting from the
// Service's own (other conditions stay).
func Status(s *v1.Service, o pool.Outcome) v1.ServiceStatus {
	st := *s.Status.DeepCopy()
	var ing []v1.LoadBalancerIngress
	vip := v1.LoadBalancerIPModeVIP
	for _, a := range o.Addrs {
		mode := vip
		ing = append(ing, v1.LoadBalancerIngress{IP: a.String(), IPMode: &mode})
	}
	st.LoadBalancer.Ingress = ing
	cond := metav1.Condition{Type: api.ConditionAssigned, Status: metav1.ConditionFalse, Reason: o.Reason, Message: o.Message, ObservedGeneration: s.Generation}
	if o.Assigned() {
		cond.Status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	return st
}

func (c *Controller) writeService(ctx context.Context, s *v1.Service, o pool.Outcome) error {
	want := Status(s, o)
	if reflect.DeepEqual(want, s.Status) {
		return nil
	}
	before := meta.FindStatusCondition(s.Status.Conditions, api.ConditionAssigned)
	upd := s.DeepCopy()
	upd.Status = want
	got, err := c.opts.Client.CoreV1().Services(s.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("write the load balancer status of Service %s/%s: %w", s.Namespace, s.Name, err)
	}
	c.mu.Lock()
	c.written[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = written{before: s.ResourceVersion, status: got.Status}
	c.mu.Unlock()
	if before == nil || before.Reason != o.Reason || before.Message != o.Message {
		kind := v1.EventTypeNormal
		if !o.Assigned() {
			kind = v1.EventTypeWarning
		}
		c.events.Event(got, kind, o.Reason, o.Message)
		c.log.Info("LoadBalancer Service", "service", s.Namespace+"/"+s.Name, "addresses", o.Addrs, "reason", o.Reason, "message", o.Message)
	}
	return nil
}

func (c *Controller) writePool(ctx context.Context, u *unstructured.Unstructured, st pool.PoolState) error {
	var cur api.PoolStatus
	if raw, ok := u.Object["status"].(map[string]any); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &cur)
	}
	want := api.PoolStatus{Used: st.Used, Free: st.Free, Conditions: append([]metav1.Condition(nil), cur.Conditions...)}
	cond := metav1.Condition{Type: api.ConditionPoolValid, Status: metav1.ConditionTrue, Reason: "Valid", Message: "addresses are handed out from this pool", ObservedGeneration: u.GetGeneration()}
	if st.Err != nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "Invalid", st.Err.Error()
	}
	before := meta.FindStatusCondition(cur.Conditions, api.ConditionPoolValid)
	changedCond := before == nil || before.Message != cond.Message || before.Status != cond.Status
	meta.SetStatusCondition(&want.Conditions, cond)
	if reflect.DeepEqual(want, cur) {
		return nil
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&want)
	if err != nil {
		return err
	}
	upd := u.DeepCopy()
	upd.Object["status"] = raw
	got, err := c.opts.Dynamic.Resource(api.PoolGVR).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("write the status of LoadBalancerPool %s: %w", u.GetName(), err)
	}
	if changedCond && st.Err != nil {
		c.events.Event(got, v1.EventTypeWarning, "Invalid", st.Err.Error())
		c.log.Warn("LoadBalancerPool refused", "pool", u.GetName(), "err", st.Err)
	}
	return nil
}
