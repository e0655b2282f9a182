package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	cniinstall "github.com/skiffnet/skiff/cni/install"
	"github.com/skiffnet/skiff/cni/routes"
)

// cniDirs are the node's CNI bin and configuration directories, the ones
// its containerd is configured with.
func (c *Config) cniDirs() (bin, conf string) {
	return filepath.Join(c.stateDir(), "cni", "bin"), filepath.Join(c.stateDir(), "cni", "net.d")
}

// startPodNetwork waits for the node's pod range, installs the CNI plugin
// and its configuration (the kubelet reports the node Ready once it is
// there) and runs the controller that routes other nodes' pod ranges.
func (a *Agent) startPodNetwork(ctx context.Context, client kubernetes.Interface, factory informers.SharedInformerFactory, done chan<- error) error {
	c := &a.cfg
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	podCIDR, err := routes.WaitForPodCIDR(wctx, client, c.NodeName)
	if err != nil {
		return err
	}
	nodeIP, err := netip.ParseAddr(c.NodeIP)
	if err != nil {
		return fmt.Errorf("--node-ip %q: %w", c.NodeIP, err)
	}
	mode := routes.Mode(c.PodNetwork)
	mtu, err := routes.PodMTU(mode, nodeIP)
	if err != nil {
		return fmt.Errorf("pod network MTU: %w", err)
	}
	binDir, confDir := c.cniDirs()
	// hostPort is portmap's job (docs/cni.md); without it pods still run.
	portMap, err := cniinstall.FindPortMap()
	if err != nil {
		c.Logger.Warn("hostPort not served", "err", err)
	}
	if err := cniinstall.Install(binDir, confDir, cniinstall.Config{
		PodCIDR: podCIDR,
		DataDir: filepath.Join(c.stateDir(), "cni", "ipam"),
		MTU:     mtu,
		PortMap: portMap,
	}); err != nil {
		return fmt.Errorf("install the CNI plugin: %w", err)
	}
	rc, err := routes.New(routes.Options{
		Client:      client,
		Informers:   factory,
		NodeName:    c.NodeName,
		NodeIP:      nodeIP,
		Mode:        mode,
		ClusterCIDR: c.ClusterCIDR,
		Logger:      c.Logger.With("component", "routes"),
		Registerer:  a.metrics,
	})
	if err != nil {
		return err
	}
	a.progress("pod network: %s, pod range %s, MTU %d", mode, podCIDR, mtu)
	go func() { done <- component("pod network routes", rc.Run(ctx)) }()
	return nil
}
