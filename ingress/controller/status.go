package controller

import (
	"context"
	"net/netip"
	"reflect"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// addresses are the IPs to publish: the configured node IPs, or the
// InternalIPs of all Ready nodes, sorted so every agent agrees.
func (c *Controller) addresses() []string {
	if len(c.opts.NodeIPs) > 0 {
		return sortedIPs(c.opts.NodeIPs)
	}
	if c.nodes == nil {
		return nil
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return nil
	}
	var ips []string
	for _, n := range nodes {
		ips = append(ips, nodeAddress(n)...)
	}
	return sortedIPs(ips)
}

// nodeAddress returns the InternalIPs of a Ready node.
func nodeAddress(n *corev1.Node) []string {
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		return nil
	}
	var ips []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ips = append(ips, a.Address)
		}
	}
	return ips
}

func sortedIPs(in []string) []string {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, s := range in {
		a, err := netip.ParseAddr(s)
		if err != nil || seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	ss := make([]string, len(out))
	for i, a := range out {
		ss[i] = a.String()
	}
	return ss
}

// ingressStatus writes status.loadBalancer of the served Ingresses where
// it differs.
func (c *Controller) ingressStatus(ctx context.Context, served []*networkingv1.Ingress, addrs []string) {
	want := make([]networkingv1.IngressLoadBalancerIngress, 0, len(addrs))
	for _, a := range addrs {
		want = append(want, networkingv1.IngressLoadBalancerIngress{IP: a})
	}
	failed := false
	for _, ing := range served {
		if reflect.DeepEqual(ing.Status.LoadBalancer.Ingress, want) ||
			(len(ing.Status.LoadBalancer.Ingress) == 0 && len(want) == 0) {
			continue
		}
		u := ing.DeepCopy()
		u.Status.LoadBalancer.Ingress = want
		if _, err := c.opts.Client.NetworkingV1().Ingresses(u.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			c.log.Warn("writing ingress status", "ingress", u.Namespace+"/"+u.Name, "err", err)
			failed = true
		}
	}
	if failed {
		c.retryLater(ctx)
	}
}

// retryLater rebuilds again in a second, which retries the status writes
// that failed (conflicts, an API server restarting).
func (c *Controller) retryLater(ctx context.Context) {
	time.AfterFunc(time.Second, func() {
		if ctx.Err() == nil {
			c.kick()
		}
	})
}
