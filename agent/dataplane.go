package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffnet/skiff/agent/containerd"
	"github.com/skiffnet/skiff/agent/dataplane"
)

// SandboxImage is the pod sandbox (pause) image, built from images/pause and
// imported into the node's containerd at start.
const SandboxImage = "skiff.local/pause:v1"

// startDataPlane starts this node's pod network, service load balancing,
// DNS and ingress on one shared informer factory.
func (a *Agent) startDataPlane(ctx context.Context, client kubernetes.Interface, kubeconfig string, done chan<- error) error {
	factory := informers.NewSharedInformerFactory(client, 0)
	a.metrics = prometheus.NewRegistry()
	if err := a.serveMetrics(ctx, a.metrics, done); err != nil {
		return fmt.Errorf("--metrics-addr %s: %w", a.cfg.MetricsAddr, err)
	}
	if err := a.startPodNetwork(ctx, client, factory, done); err != nil {
		return err
	}
	if err := a.startServiceLB(ctx, client, factory, done); err != nil {
		return err
	}
	if err := a.startAnnouncer(ctx, client, kubeconfig, factory, done); err != nil {
		return err
	}
	if err := a.startNetworkPolicy(ctx, factory, done); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	a.startServing(ctx, kubeconfig)
	return nil
}

// startServing starts the node's DNS and ingress proxy in a process of
// their own, which outlives this agent (package dataplane): a restarted or
// upgraded agent starts a new one that takes over the running one's
// sockets, so the node's clients never see them closed.
func (a *Agent) startServing(ctx context.Context, kubeconfig string) {
	c := &a.cfg
	p := &dataplane.Process{
		Config: dataplane.Config{
			NodeName: c.NodeName, NodeIP: c.NodeIP, Kubeconfig: kubeconfig, ClusterDomain: c.ClusterDomain,
			IngressHTTP: c.IngressHTTP, IngressHTTPS: c.IngressHTTPS, IngressAccessLog: c.IngressAccessLog,
		},
		LogPath:  filepath.Join(c.DataDir, "logs", "dataplane-"+c.NodeName+".log"),
		Progress: a.progress,
		Logger:   c.Logger.With("component", "dataplane"),
	}
	a.progress("starting the data plane (cluster DNS on %s, ingress on %s and %s; log %s)",
		p.Config.DNSAddr(), c.IngressHTTP, c.IngressHTTPS, p.LogPath)
	go p.Supervise(ctx)
}

// runtime returns the CRI endpoint the kubelet uses: the one given when
// something answers there, else the node's own supervised containerd
// listening at that path.
func (a *Agent) runtime(ctx context.Context, done chan error) (string, error) {
	c := &a.cfg
	sock := strings.TrimPrefix(c.RuntimeEndpoint, "unix://")
	if containerd.Answers(sock) {
		a.progress("using the container runtime at %s", sock)
		return "unix://" + sock, nil
	}
	cc := containerd.Config{
		Dir:                filepath.Dir(sock),
		CNIBinDir:          filepath.Join(c.stateDir(), "cni", "bin"),
		CNIConfDir:         filepath.Join(c.stateDir(), "cni", "net.d"),
		SandboxImage:       SandboxImage,
		InsecureRegistries: c.InsecureRegistries,
		Logger:             c.Logger.With("component", "containerd"),
	}
	if cc.Socket() != sock {
		return "", fmt.Errorf("--container-runtime-endpoint %s: nothing answers there, and Skiff's own containerd listens at DIR/containerd.sock; pass such a path or start your runtime", c.RuntimeEndpoint)
	}
	a.progress("starting containerd (%s)", cc.Dir)
	ready := make(chan struct{})
	go func() { done <- component("containerd", containerd.Supervise(ctx, cc, ready)) }()
	select {
	case <-ready:
		return "unix://" + sock, nil
	case err := <-done:
		return "", err
	case <-time.After(time.Minute):
		return "", fmt.Errorf("containerd did not answer at %s within a minute; see %s/containerd.log", sock, cc.Dir)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
