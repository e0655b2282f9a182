package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffnet/skiff/agent/cgroups"
	"github.com/skiffnet/skiff/agent/join"
	"github.com/skiffnet/skiff/agent/kubelet"
	"github.com/skiffnet/skiff/agent/serverlb"
	"github.com/skiffnet/skiff/controlplane/pki"
)

// Agent is one node's agent.
type Agent struct {
	cfg     Config
	metrics *prometheus.Registry // the data plane's metrics, served on MetricsAddr
	start   time.Time
	servers *serverlb.Balancer // the client-side load balancer over the API servers; nil with Config.Kubeconfig
}

// New checks cfg.
func New(cfg Config) (*Agent, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, start: time.Now()}, nil
}

// SetLogger sets where structured logs go; call it before Run.
func (a *Agent) SetLogger(l *slog.Logger) { a.cfg.Logger = l }

// Run brings the node up and serves until ctx is done or a part fails.
func (a *Agent) Run(ctx context.Context) error {
	c := &a.cfg
	state := c.stateDir()
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("--data-dir %s: %w", c.DataDir, err)
	}
	// Before anything is started or replaced: the state may be another cluster's node.
	if err := join.CheckState(state, c.Token, c.ClientCAFile); err != nil {
		return err
	}
	a.progress("node %s (%s), state in %s", c.NodeName, c.NodeIP, state)
	if err := cgroups.EnsureRoot(c.CgroupRoot()); err != nil {
		return err
	}
	// Everything this agent starts, containerd and pods included, stays in
	// the node's cgroup subtree.
	if err := cgroups.Join(c.CgroupRoot(), os.Getpid()); err != nil {
		return err
	}
	done := make(chan error, 8)
	kcfg, err := a.credentials(ctx, done)
	if err != nil {
		return err
	}
	endpoint, err := a.runtime(ctx, done)
	if err != nil {
		return err
	}
	kcfg.RuntimeEndpoint = endpoint
	if err := a.importImages(ctx, endpoint); err != nil {
		return err
	}
	a.progress("starting kubelet (cgroup root %s, runtime %s)", c.CgroupRoot(), endpoint)
	go func() { done <- component("kubelet", kubelet.Run(ctx, kcfg)) }()

	client, err := a.waitForNodeClient(ctx, kcfg.Kubeconfig, done)
	if err != nil {
		return err
	}
	if a.servers != nil {
		go a.followServers(ctx, client)
	}
	if err := a.startDataPlane(ctx, client, kcfg.Kubeconfig, done); err != nil {
		return err
	}
	a.progress("node %s registered; running", c.NodeName)
	go a.releaseWhenReady(ctx, client)
	select {
	case <-ctx.Done():
		return nil
	case err := <-done:
		return err
	}
}

// credentials prepares how the kubelet reaches the API: the given
// kubeconfig, or a bootstrap kubeconfig from the join token.
func (a *Agent) credentials(ctx context.Context, done chan<- error) (kubelet.Config, error) {
	c := &a.cfg
	state := c.stateDir()
	kc := kubelet.Config{
		NodeName: c.NodeName, NodeIP: c.NodeIP,
		RootDir:       filepath.Join(state, "kubelet"),
		PodLogsDir:    filepath.Join(state, "pod-logs"),
		CertDir:       filepath.Join(state, "kubelet", "pki"),
		Kubeconfig:    filepath.Join(state, "kubelet.kubeconfig"),
		ClientCAFile:  c.ClientCAFile,
		CgroupRoot:    c.CgroupRoot(),
		ClusterDNS:    c.ClusterDNS,
		ClusterDomain: c.ClusterDomain,
		ResolvConf:    "/etc/resolv.conf",
	}
	if c.Kubeconfig != "" {
		kc.Kubeconfig = c.Kubeconfig
		return kc, nil
	}
	tok, err := pki.ParseJoinToken(c.Token)
	if err != nil {
		return kc, err
	}
	a.progress("fetching the cluster CA from %s", c.Server)
	var last time.Time
	caPEM, err := join.WaitForCA(ctx, c.Server, tok, 2*time.Second, func(err error) {
		if time.Since(last) > 30*time.Second {
			a.progress("%v; trying again every 2s", err)
			last = time.Now()
		}
	})
	if err != nil {
		return kc, err
	}
	kc.ClientCAFile = filepath.Join(state, "ca.crt")
	if err := pki.WriteFile(kc.ClientCAFile, caPEM, 0o644); err != nil {
		return kc, err
	}
	server, err := a.startServerLB(ctx, done)
	if err != nil {
		return kc, err
	}
	// A node that joined before its agent had a load balancer reaches
	// one server directly: move its kubeconfig onto the load balancer.
	if err := pki.SetKubeconfigServer(kc.Kubeconfig, server); err != nil {
		return kc, err
	}
	kc.BootstrapConfig = filepath.Join(state, "bootstrap.kubeconfig")
	if err := pki.WriteTokenKubeconfig(kc.BootstrapConfig, server, caPEM, tok.Bootstrap(), "kubelet-bootstrap"); err != nil {
		return kc, err
	}
	return kc, nil
}

// waitForNodeClient waits until the kubelet holds its node credentials
// (after TLS bootstrap) and returns a client with them.
func (a *Agent) waitForNodeClient(ctx context.Context, kubeconfig string, done <-chan error) (kubernetes.Interface, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(kubeconfig); err == nil {
			rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err == nil {
				return kubernetes.NewForConfig(rc)
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-done:
			return nil, err
		case <-tick.C:
		}
	}
}

func (a *Agent) progress(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(a.cfg.Out, "skiff agent: "+msg)
	// The log gets each step with the time since start, to show where
	// start-up time goes.
	a.cfg.Logger.Info(msg, "since_start", time.Since(a.start).Round(time.Millisecond))
}

func component(name string, err error) error {
	if err == nil {
		return fmt.Errorf("%s stopped", name)
	}
	return fmt.Errorf("%s: %w", name, err)
}
