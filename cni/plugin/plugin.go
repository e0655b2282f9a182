// Package plugin is skiff-cni, Skiff's CNI plugin: routed L3 pod networking
// without a bridge. Each pod gets a veth whose pod side, eth0, holds the
// pod's address as a /32 with a default route through the link-local
// Gateway; the node holds a /32 route to the pod through the host side.
// Addresses come from the node's PodCIDR through cni/ipam.
//
// It implements the CNI 1.1.0 verbs ADD, DEL, CHECK, VERSION, STATUS and
// GC through the spec's plugin skeleton. The same binary also answers for
// the "loopback" plugin type (bringing lo up), which containerd's CRI
// invokes for every sandbox.
package plugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/skiffnet/skiff/cni/ipam"
	"github.com/skiffnet/skiff/cni/netaddr"
)

// Type is the plugin's "type" in a network configuration and its binary's
// name in the CNI bin directory.
const Type = "skiff-cni"

// LoopbackType is the configuration type the plugin also serves.
const LoopbackType = "loopback"

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Funcs are the verbs for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}
}

// Main runs the plugin with the process's environment and stdin and exits.
// A binary calls it from main (cmd/skiff-cni), or when invoked as skiff-cni
// or loopback by argv[0].
func Main(about string) {
	skel.PluginMainFuncs(Funcs(), Versions, about)
}

// Add attaches a container to the pod network.
func Add(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Type == LoopbackType {
		return loopbackAdd(args, conf)
	}
	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	cidr, err := conf.podCIDR()
	if err != nil {
		return err
	}
	store, err := ipam.Open(conf.ipamDir(), cidr)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "open IPAM state in "+conf.DataDir, err.Error())
	}
	ip, err := store.Allocate(args.ContainerID, args.IfName)
	if errors.Is(err, ipam.ErrExhausted) {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, "allocate a pod address", err.Error())
	}
	mtu := conf.MTU
	if mtu == 0 {
		mtu = defaultMTU()
	}
	a := attachment{hostName: HostVethName(args.ContainerID, args.IfName), ifName: args.IfName, ip: ip, mtu: mtu}
	l, err := setup(podNS, a)
	if err == nil {
		err = netaddr.EnableForwarding()
	}
	if err != nil {
		// Leave nothing behind: the runtime retries ADD or calls DEL,
		// and both must find a clean slate.
		_ = teardown(a.hostName)
		_, _ = store.Release(args.ContainerID, args.IfName)
		return fmt.Errorf("attach %s to the pod network: %w", args.ContainerID, err)
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: a.hostName, Mac: l.host.Attrs().HardwareAddr.String(), Mtu: mtu},
			{Name: a.ifName, Mac: l.pod.Attrs().HardwareAddr.String(), Mtu: mtu, Sandbox: args.Netns},
		},
		IPs: []*current.IPConfig{{
			Interface: current.Int(1),
			Address:   *netaddr.IPNet(netip.PrefixFrom(ip, 32)),
			Gateway:   Gateway.AsSlice(),
		}},
		Routes: []*types.Route{{Dst: *netaddr.IPNet(netip.MustParsePrefix("0.0.0.0/0")), GW: Gateway.AsSlice()}},
		DNS:    conf.DNS,
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// Del detaches a container. It succeeds when there is nothing to remove and
// when the namespace is already gone: the runtime may call it any number
// of times.
func Del(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Type == LoopbackType {
		return nil // lo goes away with the namespace
	}
	if err := teardown(HostVethName(args.ContainerID, args.IfName)); err != nil {
		return err
	}
	// Release from whatever range the address was taken from: the pod
	// range may have changed since ADD, so do not insist on resolving it.
	cidr, err := conf.podCIDR()
	if err != nil {
		cidr = netip.MustParsePrefix("0.0.0.0/0")
	}
	store, err := ipam.Open(conf.ipamDir(), clampForRelease(cidr))
	if err != nil {
		return types.NewError(types.ErrIOFailure, "open IPAM state in "+conf.DataDir, err.Error())
	}
	if _, err := store.Release(args.ContainerID, args.IfName); err != nil {
		return types.NewError(types.ErrIOFailure, "free the pod address", err.Error())
	}
	return nil
}

// clampForRelease gives ipam.Open a range it accepts; releasing matches
// owners, not ranges, so any valid range will do.
func clampForRelease(p netip.Prefix) netip.Prefix {
	if p.Bits() > 29 || !p.Addr().Is4() {
		return netip.MustParsePrefix("0.0.0.0/0")
	}
	return p
}

// Check verifies a container's attachment against the ADD result the
// runtime kept (prevResult).
func Check(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	if conf.Type == LoopbackType {
		return loopbackCheck(podNS)
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult, the result of ADD, in the configuration", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "prevResult cannot be converted", err.Error())
	}
	ip, err := prevAddress(prev, args.IfName)
	if err != nil {
		return err
	}
	cidr, err := conf.podCIDR()
	if err != nil {
		return err
	}
	store, err := ipam.Open(conf.ipamDir(), cidr)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "open IPAM state in "+conf.DataDir, err.Error())
	}
	held, err := store.List()
	if err != nil {
		return types.NewError(types.ErrIOFailure, "read IPAM state", err.Error())
	}
	owned := false
	for _, h := range held {
		if h.IP == ip {
			if h.ContainerID != args.ContainerID || h.IfName != args.IfName {
				return fmt.Errorf("address %s is recorded for %s/%s, not this container", ip, h.ContainerID, h.IfName)
			}
			owned = true
		}
	}
	if !owned {
		return fmt.Errorf("address %s is not recorded as allocated in %s", ip, conf.ipamDir())
	}
	a := attachment{hostName: HostVethName(args.ContainerID, args.IfName), ifName: args.IfName, ip: ip}
	if err := check(podNS, a); err != nil {
		return fmt.Errorf("attachment of %s: %w", args.ContainerID, err)
	}
	return nil
}

func prevAddress(prev *current.Result, ifName string) (netip.Addr, error) {
	for _, c := range prev.IPs {
		if c.Interface == nil || *c.Interface >= len(prev.Interfaces) || prev.Interfaces[*c.Interface].Name != ifName {
			continue
		}
		if a, ok := netip.AddrFromSlice(c.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, types.NewError(types.ErrInvalidNetworkConfig, "prevResult has no IPv4 address on "+ifName, "")
}

// GC frees the addresses and host veths of attachments the runtime no
// longer holds (cni.dev/valid-attachments).
func GC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Type == LoopbackType {
		return nil
	}
	valid := make([]ipam.Attachment, 0, len(conf.ValidAttachments))
	keep := make(map[string]bool, len(conf.ValidAttachments))
	for _, v := range conf.ValidAttachments {
		valid = append(valid, ipam.Attachment{ContainerID: v.ContainerID, IfName: v.IfName})
		keep[HostVethName(v.ContainerID, v.IfName)] = true
	}
	var errs []error
	if _, err := os.Stat(conf.ipamDir()); err == nil {
		store, err := ipam.Open(conf.ipamDir(), netip.MustParsePrefix("0.0.0.0/0"))
		if err != nil {
			return types.NewError(types.ErrIOFailure, "open IPAM state in "+conf.DataDir, err.Error())
		}
		freed, err := store.GC(valid)
		errs = append(errs, err)
		for _, f := range freed {
			fmt.Fprintf(os.Stderr, "skiff-cni: GC freed %s held by %s/%s\n", f.IP, f.ContainerID, f.IfName)
		}
	}
	_, err = deleteStaleVeths(keep)
	errs = append(errs, err)
	return errors.Join(errs...)
}

// Status reports whether ADD can succeed now: the pod range is known, the
// IPAM state is writable and an address is free.
func Status(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Type == LoopbackType {
		return nil
	}
	cidr, err := conf.podCIDR()
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	store, err := ipam.Open(conf.ipamDir(), cidr)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "IPAM state in "+conf.DataDir+" is not usable: "+err.Error(), "")
	}
	held, err := store.List()
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "IPAM state is not readable: "+err.Error(), "")
	}
	inRange := 0
	for _, h := range held {
		if cidr.Contains(h.IP) {
			inRange++
		}
	}
	if inRange >= store.Size() {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("all %d addresses of pod CIDR %s are held: delete pods on this node", store.Size(), cidr), "")
	}
	return nil
}

// openNetNS opens the container's namespace; a path that does not exist
// means the container is gone (code 3).
func openNetNS(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err == nil {
		return n, nil
	}
	var notExist ns.NSPathNotExistErr
	if errors.As(err, &notExist) {
		return nil, types.NewError(types.ErrUnknownContainer, fmt.Sprintf("network namespace %s does not exist: the container is gone; check CNI_NETNS", path), "")
	}
	return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS %s is not a network namespace", path), err.Error())
}

func loopbackAdd(args *skel.CmdArgs, conf *NetConf) error {
	podNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	host, pod, err := handles(podNS)
	if err != nil {
		return err
	}
	defer host.Close()
	defer pod.Close()
	lo, err := pod.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := pod.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "lo", Mac: "00:00:00:00:00:00", Sandbox: args.Netns}},
		IPs: []*current.IPConfig{
			{Interface: current.Int(0), Address: net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}},
		},
	}
	return types.PrintResult(res, conf.CNIVersion)
}

func loopbackCheck(podNS ns.NetNS) error {
	host, pod, err := handles(podNS)
	if err != nil {
		return err
	}
	defer host.Close()
	defer pod.Close()
	lo, err := pod.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		return errors.New("lo is down")
	}
	return nil
}
