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
	if err := a.startDNS(ctx, factory, done); err != nil {
		return err
	}
	if err := a.startIngress(ctx, client, kubeconfig, factory, done); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	return nil
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
