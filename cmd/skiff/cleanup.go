package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skiffnet/skiff/agent"
	"github.com/skiffnet/skiff/agent/cleanup"
	"github.com/skiffnet/skiff/bpf"
	cniinstall "github.com/skiffnet/skiff/cni/install"
	"github.com/skiffnet/skiff/cni/routes"
	"github.com/skiffnet/skiff/ingress/gatewayaddr"
	"github.com/skiffnet/skiff/loadbalancer/announce"
)

// dataPlaneCleanup lists what the data plane leaves on the machine once the
// nodes' processes are gone: pod network namespaces (and with them veths
// and pod routes), the CNI plugin and its configuration, the routes to
// other nodes' pods, the VXLAN device and the masquerade table.
func dataPlaneCleanup(agentDir string, nodes []string) []cleanup.Step {
	var steps []cleanup.Step
	for _, n := range nodes {
		state := filepath.Join(agentDir, n)
		steps = append(steps,
			cleanup.Step{Name: "pod network namespaces of " + n, Run: func() error {
				_, err := cleanup.RemovePodNetns(cleanup.PodAddresses(filepath.Join(state, "cni", "ipam")))
				return err
			}},
			cleanup.Step{Name: "CNI plugin and configuration of " + n, Run: func() error {
				return cniinstall.Remove(filepath.Join(state, "cni", "bin"), filepath.Join(state, "cni", "net.d"))
			}},
			cleanup.Step{Name: "NetworkPolicy programs and maps of " + n, Run: func() error {
				return bpf.RemovePolicy(agent.PinDir(n))
			}},
			cleanup.Step{Name: "arp_ignore of " + n + "'s link", Run: func() error {
				return announce.RestoreKernel(agent.ARPIgnoreFile(agentDir, n))
			}},
		)
	}
	return append(steps,
		cleanup.Step{Name: "pod routes to other nodes and the VXLAN device", Run: removeRoutes},
		cleanup.Step{Name: "local routes of Gateway addresses", Run: gatewayaddr.Flush},
		cleanup.Step{Name: "hostPort rules (portmap's nat chains)", Run: func() error {
			return cniinstall.RemovePortMapRules(cniinstall.NetworkName)
		}},
		cleanup.Step{Name: "masquerade table " + routes.Table, Run: func() error {
			m, err := routes.NewMasquerade()
			if err != nil {
				return err
			}
			defer m.Close()
			return m.Remove()
		}},
	)
}

func removeRoutes() error {
	var errs []error
	rs, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Protocol: routes.Proto, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range rs {
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, err)
		}
	}
	if l, err := netlink.LinkByName(routes.DeviceName); err == nil {
		errs = append(errs, netlink.LinkDel(l))
	}
	return errors.Join(errs...)
}
