package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"

	"k8s.io/client-go/informers"

	"github.com/skiffnet/skiff/agent/dataplane"
	"github.com/skiffnet/skiff/netpol"
)

// PolicyStatusFile is where the node's policy controller says what it
// applied (pods and policy names), which `skiff agent policy` reads.
func PolicyStatusFile(node string) string {
	return filepath.Join(filepath.Dir(dataplane.SocketPath(node)), "netpol.json")
}

// startNetworkPolicy runs the controller that enforces NetworkPolicy with
// eBPF programs on the local pods' host veths (docs/netpol.md). Its maps
// and links are pinned in the node's pin directory, so policy stays
// enforced while the agent is away. It registers informers, so it must
// run before factory.Start.
func (a *Agent) startNetworkPolicy(ctx context.Context, factory informers.SharedInformerFactory, done chan<- error) error {
	c := &a.cfg
	nodeIP, err := netip.ParseAddr(c.NodeIP)
	if err != nil {
		return fmt.Errorf("--node-ip %q: %w", c.NodeIP, err)
	}
	ctl, err := netpol.New(netpol.Options{
		Informers:  factory,
		NodeName:   c.NodeName,
		NodeIP:     nodeIP,
		PinDir:     PinDir(c.NodeName),
		StatusFile: PolicyStatusFile(c.NodeName),
		Logger:     c.Logger.With("component", "netpol"),
		Registerer: a.metrics,
	})
	if err != nil {
		return fmt.Errorf("network policy: this kernel must support TCX (Linux 6.6 or newer): %w", err)
	}
	a.progress("network policy: eBPF on each pod's host veth, pins in %s/netpol", PinDir(c.NodeName))
	go func() {
		err := ctl.Run(ctx)
		ctl.Close() // programs stay attached: policy is enforced while the agent is down
		done <- component("network policy", err)
	}()
	return nil
}
