package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/vishvananda/netlink"

	"github.com/skiffnet/skiff/agent/cgroups"
	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/cni/routes"
	"github.com/skiffnet/skiff/proxy"
)

// BPFFS is where the node's BPF maps and links are pinned, so services keep
// being balanced while the agent restarts.
const BPFFS = "/sys/fs/bpf"

// PinDir is the node's own directory of pins.
func PinDir(node string) string { return filepath.Join(BPFFS, "skiff", node) }

// kubeDNS is the cluster DNS Service; it has no selector because every
// agent answers DNS itself, so the load balancer sends it to this node.
var kubeDNS = types.NamespacedName{Namespace: "kube-system", Name: "kube-dns"}

// startServiceLB loads the node's socket load balancer and runs the
// controller that keeps its maps in line with Services and EndpointSlices.
// New registers its informers, so it must run before factory.Start.
func (a *Agent) startServiceLB(ctx context.Context, client kubernetes.Interface, factory informers.SharedInformerFactory, done chan<- error) error {
	c := &a.cfg
	if err := bpf.MountBPFFS(BPFFS); err != nil {
		return fmt.Errorf("service load balancing needs a bpf filesystem at %s: %w", BPFFS, err)
	}
	nodeIP, err := netip.ParseAddr(c.NodeIP)
	if err != nil {
		return fmt.Errorf("--node-ip %q: %w", c.NodeIP, err)
	}
	ifaces, err := externalInterfaces(nodeIP, c.PodNetwork)
	if err != nil {
		return fmt.Errorf("service load balancer: %w", err)
	}
	p, err := proxy.New(proxy.Options{
		Client:             client,
		Informers:          factory,
		NodeName:           c.NodeName,
		NodeIPs:            []netip.Addr{nodeIP},
		CgroupPath:         cgroups.Unified(c.LBCgroup),
		PinDir:             PinDir(c.NodeName),
		Redirects:          map[types.NamespacedName]netip.Addr{kubeDNS: nodeIP},
		ExternalInterfaces: ifaces,
		Logger:             c.Logger.With("component", "proxy"),
		Registerer:         a.metrics,
	})
	if err != nil {
		return fmt.Errorf("service load balancer: this kernel must support eBPF cgroup socket hooks (cgroup v2 with BPF_CGROUP_INET4_CONNECT/SENDMSG/RECVMSG/GETPEERNAME, Linux 5.8 or newer with BTF): %w", err)
	}
	a.progress("service load balancing: eBPF socket hooks on cgroup %s, tc programs on %s, maps pinned in %s",
		c.LBCgroup, ifaces[0].Name, PinDir(c.NodeName))
	go func() {
		err := p.Run(ctx)
		// Programs stay attached and maps pinned: balancing goes on while
		// the agent is down.
		p.Close()
		done <- component("service load balancer", err)
	}()
	return nil
}

// externalInterfaces are where traffic from outside enters the node: the
// link holding the node's address. With the VXLAN overlay, replies of
// remote backends come back through its device, which the tc programs
// must see too (it may appear only once the route controller runs).
func externalInterfaces(nodeIP netip.Addr, podNetwork string) ([]bpf.Interface, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); !ok || ip.Unmap() != nodeIP {
			continue
		}
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return nil, fmt.Errorf("link of the node address %s: %w", nodeIP, err)
		}
		ifaces := []bpf.Interface{{Name: l.Attrs().Name, SNAT: nodeIP}}
		if podNetwork == string(routes.ModeVXLAN) {
			ifaces = append(ifaces, bpf.Interface{Name: routes.DeviceName})
		}
		return ifaces, nil
	}
	return nil, fmt.Errorf("no interface holds the node address %s", nodeIP)
}
