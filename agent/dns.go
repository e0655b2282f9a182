package agent

import (
	"context"
	"fmt"
	"net"

	"k8s.io/client-go/informers"

	"github.com/skiffnet/skiff/dns/forward"
	"github.com/skiffnet/skiff/dns/records"
	"github.com/skiffnet/skiff/dns/server"
	"github.com/skiffnet/skiff/dns/watch"
)

// resolvConf lists the node's upstream resolvers.
const resolvConf = "/etc/resolv.conf"

// startDNS answers cluster DNS on the node's own address, port 53; the
// service load balancer sends the kube-dns ClusterIP there, so pods reach
// it with no extra hop. Other names go to the node's resolvers.
func (a *Agent) startDNS(ctx context.Context, factory informers.SharedInformerFactory, done chan<- error) error {
	c := &a.cfg
	log := c.Logger.With("component", "dns")
	opts := records.Options{Zone: c.ClusterDomain}
	empty, err := records.Build(opts, nil, nil)
	if err != nil {
		return fmt.Errorf("--cluster-domain %q: %w", c.ClusterDomain, err)
	}
	var fwd server.Forwarder
	if ups, err := forward.FromResolvConf(resolvConf); err != nil {
		log.Warn("no upstream resolvers: names outside the cluster will fail", "err", err)
	} else if f, err := forward.New(forward.Options{Upstreams: ups}); err == nil {
		fwd = f
	}
	h, err := server.NewHandler(empty, fwd, a.metrics, log)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(c.NodeIP, "53")
	a.progress("cluster DNS on %s for %s (the kube-dns Service is sent there)", addr, c.ClusterDomain)
	go func() { done <- component("dns", h.ListenAndServe(ctx, addr)) }()
	go func() { done <- component("dns records", watch.Run(ctx, factory, opts, h, log)) }()
	return nil
}
