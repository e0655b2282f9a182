package agent

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"

	"k8s.io/client-go/kubernetes"

	"github.com/skiffnet/skiff/agent/serverlb"
)

// startServerLB starts the node's client-side load balancer over every
// API server, seeded with --server and, once the node has credentials,
// kept equal to the default/kubernetes endpoints (followServers). The
// kubelet and the data plane reach the API through it, so the node keeps
// working when one server of several dies. It returns the URL to use.
func (a *Agent) startServerLB(ctx context.Context, done chan<- error) (string, error) {
	c := &a.cfg
	u, err := url.Parse(c.Server)
	if err != nil {
		return "", fmt.Errorf("--server %q: %w", c.Server, err)
	}
	seed := u.Host
	if u.Port() == "" {
		seed += ":443"
	}
	lb, err := serverlb.New(serverlb.Options{
		ListenAddr: c.APIServerLB,
		Servers:    []string{seed},
		StatePath:  filepath.Join(c.stateDir(), "servers.json"),
		Logger:     c.Logger.With("component", "server-lb"),
	})
	if err != nil {
		return "", fmt.Errorf("API server load balancer: %w", err)
	}
	a.servers = lb
	a.progress("reaching the API servers %v through %s", lb.Servers(), lb.Addr())
	go func() { done <- component("API server load balancer", lb.Run(ctx)) }()
	return lb.URL(), nil
}

// followServers keeps the load balancer's list equal to the API servers
// the cluster advertises.
func (a *Agent) followServers(ctx context.Context, client kubernetes.Interface) {
	if err := a.servers.Watch(ctx, client); err != nil && ctx.Err() == nil {
		a.cfg.Logger.Error("following the API servers' endpoints stopped; the node keeps its last list", "err", err)
	}
}
