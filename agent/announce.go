package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/skiffnet/skiff/agent/dataplane"
	"github.com/skiffnet/skiff/loadbalancer/announce"
	lbcontroller "github.com/skiffnet/skiff/loadbalancer/controller"
)

// AnnouncedFile lists the LoadBalancer addresses node answers ARP for
// (read by `skiff agent services`).
func AnnouncedFile(node string) string {
	return filepath.Join(filepath.Dir(dataplane.SocketPath(node)), "lb-announced")
}

// ARPIgnoreFile holds the node link's arp_ignore from before the agent
// changed it (announce.QuietKernel), for `skiff uninstall`.
func ARPIgnoreFile(agentDir, node string) string {
	return filepath.Join(agentDir, node, "arp-ignore")
}

// startAnnouncer runs the L2 announcer of LoadBalancer and Gateway
// addresses on the link holding the node address (loadbalancer/announce). It registers
// informers, so it must run before factory.Start.
func (a *Agent) startAnnouncer(ctx context.Context, client kubernetes.Interface, kubeconfig string, factory informers.SharedInformerFactory, done chan<- error) error {
	c := &a.cfg
	nodeIP, err := netip.ParseAddr(c.NodeIP)
	if err != nil {
		return fmt.Errorf("--node-ip %q: %w", c.NodeIP, err)
	}
	ifaces, err := externalInterfaces(nodeIP, c.PodNetwork)
	if err != nil {
		return fmt.Errorf("load balancer announcer: %w", err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load balancer announcer: %w", err)
	}
	gw, err := gatewayclient.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("load balancer announcer: %w", err)
	}
	if err := announce.QuietKernel(ifaces[0].Name, ARPIgnoreFile(c.DataDir, c.NodeName)); err != nil {
		return fmt.Errorf("load balancer announcer: %w", err)
	}
	ann, err := announce.New(announce.Options{
		LeaseClient: announce.TokenClient(client, rc, lbcontroller.LeaseNamespace, lbcontroller.AnnouncerSecret),
		Informers:   factory, Gateway: gw, NodeName: c.NodeName, Interface: ifaces[0].Name,
		LeaseNamespace: lbcontroller.LeaseNamespace, StateFile: AnnouncedFile(c.NodeName),
		Registerer: a.metrics, Logger: c.Logger.With("component", "lb-announce"),
	})
	if err != nil {
		return err
	}
	a.progress("LoadBalancer addresses: ARP on %s for the addresses this node wins the Lease of (%s)", ifaces[0].Name, announce.DefaultTiming)
	go func() { done <- component("load balancer announcer", ann.Run(ctx)) }()
	return nil
}
