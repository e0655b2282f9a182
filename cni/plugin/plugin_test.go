package plugin_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/skiffnet/skiff/cni/plugin"
)

func TestAddCheckDel(t *testing.T) {
	n := newNode(t)
	pod := newNS(t)
	l := n.conflist(t, nil)
	r := rt("c1", pod)

	res := n.mustAdd(t, l, r)
	if len(res.IPs) != 1 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 {
		t.Fatalf("result IPs %+v: want one address on interface 1 (eth0)", res.IPs)
	}
	ip := res.IPs[0].Address
	if ones, _ := ip.Mask.Size(); ones != 32 || !strings.HasPrefix(ip.IP.String(), "10.244.1.") || ip.IP.String() == "10.244.1.1" {
		t.Fatalf("pod address %s: want a /32 from 10.244.1.0/24 other than .0, .1 and .255", &ip)
	}
	if got := res.IPs[0].Gateway.String(); got != "169.254.1.1" {
		t.Errorf("gateway %s, want 169.254.1.1", got)
	}
	if res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != pod.Path() || res.Interfaces[0].Name != plugin.HostVethName("c1", "eth0") {
		t.Errorf("interfaces %+v", res.Interfaces)
	}

	// The pod side as the pod sees it: address, MTU of the node's uplink,
	// default route through the link-local gateway.
	err := pod.Do(func(ns.NetNS) error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if eth0.Attrs().MTU != uplinkMTU {
			t.Errorf("pod MTU %d, want the uplink's %d", eth0.Attrs().MTU, uplinkMTU)
		}
		routes, err := netlink.RouteList(eth0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var def bool
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == "169.254.1.1" {
				def = true
			}
		}
		if !def {
			t.Errorf("pod routes %v: want default via 169.254.1.1", routes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.check(t, l, r); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}

	// Pod to node and node to pod, without address translation.
	if src, err := dial(t, pod, n.ns, n.addr); err != nil || !src.Equal(ip.IP) {
		t.Errorf("pod→node: %v, node saw %v, want %s", err, src, ip.IP)
	}
	if src, err := dial(t, n.ns, pod, ip.IP); err != nil || !src.Equal(n.addr) {
		t.Errorf("node→pod: %v, pod saw %v, want %s", err, src, n.addr)
	}

	// CHECK notices the node's route to the pod is gone.
	if err := n.in(t, func() error {
		return netlink.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: ip.IP, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_NOWHERE})
	}); err != nil {
		t.Fatal(err)
	}
	err = n.check(t, l, r)
	if err == nil || !strings.Contains(err.Error(), "route") {
		t.Fatalf("CHECK after deleting the host route: %v, want an error naming the route", err)
	}

	if err := n.del(t, l, r); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := n.del(t, l, r); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if f, v, rts := n.ipFiles(t), n.hostVeths(t), n.podRoutes(t); len(f)+len(v)+len(rts) > 0 {
		t.Fatalf("after DEL: address files %v, veths %v, routes %v left", f, v, rts)
	}
}

func TestDelWithoutNamespace(t *testing.T) {
	n := newNode(t)
	pod := newNS(t)
	l := n.conflist(t, nil)
	n.mustAdd(t, l, rt("c1", pod))
	// The runtime may delete the sandbox's namespace before CNI DEL.
	gone := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/var/run/netns/skiff-no-such-ns", IfName: "eth0"}
	if err := n.del(t, l, gone); err != nil {
		t.Fatalf("DEL with a missing namespace: %v", err)
	}
	if err := n.del(t, l, &libcni.RuntimeConf{ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatalf("DEL with no namespace given: %v", err)
	}
	if f, v := n.ipFiles(t), n.hostVeths(t); len(f)+len(v) > 0 {
		t.Fatalf("left: %v %v", f, v)
	}
}

func TestPodToPodOnOneNode(t *testing.T) {
	n := newNode(t)
	a, b := newNS(t), newNS(t)
	l := n.conflist(t, map[string]any{"mtu": 1300})
	ra := n.mustAdd(t, l, rt("a", a))
	rb := n.mustAdd(t, l, rt("b", b))
	if ra.Interfaces[1].Mtu != 1300 {
		t.Errorf("MTU %d, want the configured 1300", ra.Interfaces[1].Mtu)
	}
	src, err := dial(t, a, b, rb.IPs[0].Address.IP)
	if err != nil || !src.Equal(ra.IPs[0].Address.IP) {
		t.Fatalf("pod a→pod b: %v; b saw %v, want a's %s", err, src, ra.IPs[0].Address.IP)
	}
}

func TestGCFreesWhatTheRuntimeNoLongerHolds(t *testing.T) {
	n := newNode(t)
	l := n.conflist(t, nil)
	keep, drop := newNS(t), newNS(t)
	n.mustAdd(t, l, rt("keep", keep))
	n.mustAdd(t, l, rt("drop", drop))
	// Forget "drop" in libcni's cache, as a runtime that crashed would, so
	// only the plugin's GC can free it.
	os.RemoveAll(filepath.Join(n.data, "cache"))
	err := n.in(t, func() error {
		return n.net.GCNetworkList(context.Background(), l, &libcni.GCArgs{
			ValidAttachments: []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}},
		})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if f := n.ipFiles(t); len(f) != 1 {
		t.Fatalf("address files after GC %v, want only keep's", f)
	}
	if v := n.hostVeths(t); len(v) != 1 || v[0] != plugin.HostVethName("keep", "eth0") {
		t.Fatalf("veths after GC %v, want only keep's", v)
	}
}

func TestStatus(t *testing.T) {
	n := newNode(t)
	status := func(l *libcni.NetworkConfigList) error {
		return n.in(t, func() error { return n.net.GetStatusNetworkList(context.Background(), l) })
	}
	if err := status(n.conflist(t, nil)); err != nil {
		t.Fatalf("STATUS with a pod range: %v", err)
	}
	cidrFile := filepath.Join(t.TempDir(), "podcidr")
	l := n.conflist(t, map[string]any{"podCIDR": nil, "podCIDRFile": cidrFile})
	err := status(l)
	if cniCode(err) != int(types.ErrPluginNotAvailable) || !strings.Contains(err.Error(), cidrFile) {
		t.Fatalf("STATUS before the agent wrote the pod range: %v, want code 50 naming %s", err, cidrFile)
	}
	// ADD says the same with "try again later".
	if _, err := n.add(t, l, rt("early", newNS(t))); cniCode(err) != int(types.ErrTryAgainLater) {
		t.Fatalf("ADD before the pod range is known: %v, want code 11", err)
	}
	os.WriteFile(cidrFile, []byte("10.244.7.0/24\n"), 0o644)
	if err := status(l); err != nil {
		t.Fatalf("STATUS once the pod range is written: %v", err)
	}
	res := n.mustAdd(t, l, rt("late", newNS(t)))
	if !strings.HasPrefix(res.IPs[0].Address.IP.String(), "10.244.7.") {
		t.Fatalf("address %s not from the file's range", res.IPs[0].Address.IP)
	}
}

// exec runs the plugin directly with raw input, as a runtime would.
func execPlugin(t *testing.T, n *node, command, netns string, conf []byte) error {
	t.Helper()
	args := &invoke.Args{Command: command, ContainerID: "bad", NetNS: netns, IfName: "eth0", Path: binDir}
	return n.in(t, func() error {
		_, err := invoke.ExecPluginWithResult(context.Background(), filepath.Join(binDir, "skiff-cni"), conf, args, nil)
		return err
	})
}

func TestBadInput(t *testing.T) {
	n := newNode(t)
	pod := newNS(t)
	good := func(extra string) []byte {
		return []byte(`{"cniVersion":"1.1.0","name":"skiff","type":"skiff-cni","dataDir":"` + n.data + `"` + extra + `}`)
	}
	for _, tc := range []struct {
		name  string
		netns string
		conf  []byte
		code  uint
		say   string
	}{
		{"malformed JSON", pod.Path(), []byte(`{"cniVersion":"1.1.0","name":`), types.ErrDecodingFailure, "unmarshal"},
		{"unknown CNI version", pod.Path(), []byte(`{"cniVersion":"9.9.9","name":"skiff","type":"skiff-cni","podCIDR":"10.244.1.0/24"}`), types.ErrIncompatibleCNIVersion, "incompatible"},
		{"missing netns", "", good(`,"podCIDR":"10.244.1.0/24"`), types.ErrInvalidEnvironmentVariables, "CNI_NETNS"},
		{"netns that does not exist", "/var/run/netns/skiff-no-such-ns", good(`,"podCIDR":"10.244.1.0/24"`), types.ErrUnknownContainer, "does not exist"},
		{"no pod range", pod.Path(), good(``), types.ErrInvalidNetworkConfig, "podCIDR"},
		{"bad pod range", pod.Path(), good(`,"podCIDR":"10.244.1.0"`), types.ErrInvalidNetworkConfig, "10.244.1.0/24"},
		{"bad MTU", pod.Path(), good(`,"podCIDR":"10.244.1.0/24","mtu":70000`), types.ErrInvalidNetworkConfig, "mtu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := execPlugin(t, n, "ADD", tc.netns, tc.conf)
			if cniCode(err) != int(tc.code) || !strings.Contains(err.Error(), tc.say) {
				t.Fatalf("got %v (code %d), want code %d mentioning %q", err, cniCode(err), tc.code, tc.say)
			}
		})
	}
	if f, v := n.ipFiles(t), n.hostVeths(t); len(f)+len(v) > 0 {
		t.Fatalf("failed ADDs left %v %v", f, v)
	}
}

func TestExhaustedRange(t *testing.T) {
	n := newNode(t)
	l := n.conflist(t, map[string]any{"podCIDR": "10.244.9.0/29"}) // 5 addresses
	pod := newNS(t)
	for i := range 5 {
		n.mustAdd(t, l, &libcni.RuntimeConf{ContainerID: fmt.Sprint("c", i), NetNS: pod.Path(), IfName: fmt.Sprint("eth", i)})
	}
	_, err := n.add(t, l, &libcni.RuntimeConf{ContainerID: "c5", NetNS: pod.Path(), IfName: "eth5"})
	if cniCode(err) != int(types.ErrTryAgainLater) || !strings.Contains(err.Error(), "no free address in pod CIDR 10.244.9.0/29") {
		t.Fatalf("ADD on a full range: %v, want code 11 naming the range", err)
	}
	if err := n.in(t, func() error { return n.net.GetStatusNetworkList(context.Background(), l) }); cniCode(err) != int(types.ErrPluginNotAvailable) {
		t.Fatalf("STATUS on a full range: %v, want code 50", err)
	}
	if v := n.hostVeths(t); len(v) != 5 {
		t.Fatalf("the failed ADD changed the veths: %v", v)
	}
}

// An ADD killed half way leaves a veth and an address file; the retried
// ADD for the same pod must succeed and reuse the address.
func TestAddAfterInterruptedAdd(t *testing.T) {
	n := newNode(t)
	l := n.conflist(t, nil)
	pod := newNS(t)
	first := n.mustAdd(t, l, rt("c1", pod))
	// Break it the way a crash between steps would: no default route in
	// the pod, and no record in libcni's cache.
	pod.Do(func(ns.NetNS) error {
		return netlink.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}})
	})
	os.RemoveAll(filepath.Join(n.data, "cache"))
	again := n.mustAdd(t, l, rt("c1", pod))
	if !again.IPs[0].Address.IP.Equal(first.IPs[0].Address.IP) {
		t.Fatalf("retried ADD got %s, the first attempt reserved %s", again.IPs[0].Address.IP, first.IPs[0].Address.IP)
	}
	if err := n.check(t, l, rt("c1", pod)); err != nil {
		t.Fatalf("CHECK after the retried ADD: %v", err)
	}
	if v := n.hostVeths(t); len(v) != 1 {
		t.Fatalf("veths %v, want one", v)
	}
}

func TestCyclesLeaveNothingBehind(t *testing.T) {
	n := newNode(t)
	l := n.conflist(t, nil)
	pod := newNS(t)
	seen := map[string]bool{}
	for i := range 200 {
		r := rt(fmt.Sprintf("cycle-%d", i), pod)
		res := n.mustAdd(t, l, r)
		seen[res.IPs[0].Address.IP.String()] = true
		if err := n.del(t, l, r); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
	}
	if f, v, rts := n.ipFiles(t), n.hostVeths(t), n.podRoutes(t); len(f)+len(v)+len(rts) > 0 {
		t.Fatalf("after 200 cycles: address files %v, veths %v, routes %v", f, v, rts)
	}
	pod.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Error("eth0 left in the pod namespace")
		}
		return nil
	})
	// Addresses rotate through the range rather than reusing one at once.
	if len(seen) < 150 {
		t.Errorf("200 cycles used only %d distinct addresses", len(seen))
	}
}

func TestLoopbackType(t *testing.T) {
	n := newNode(t)
	pod := newNS(t)
	b := []byte(`{"cniVersion":"1.0.0","name":"cni-loopback","plugins":[{"type":"loopback"}]}`)
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.add(t, l, &libcni.RuntimeConf{ContainerID: "lo", NetNS: pod.Path(), IfName: "lo"}); err != nil {
		t.Fatalf("loopback ADD: %v", err)
	}
	pod.Do(func(ns.NetNS) error {
		lo, _ := netlink.LinkByName("lo")
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Error("lo is down after the loopback ADD")
		}
		return nil
	})
	if err := n.del(t, l, &libcni.RuntimeConf{ContainerID: "lo", NetNS: pod.Path(), IfName: "lo"}); err != nil {
		t.Fatalf("loopback DEL: %v", err)
	}
}

// TestCNITool drives the plugin with the cnitool binary from the CNI module,
// as an operator would.
func TestCNITool(t *testing.T) {
	n := newNode(t)
	n.conflist(t, nil)
	pod := newNS(t)
	tool := func(args ...string) (string, error) {
		var out []byte
		err := n.in(t, func() (err error) {
			cmd := exec.Command(filepath.Join(binDir, "cnitool"), args...)
			cmd.Env = append(os.Environ(), "NETCONFPATH="+n.conf, "CNI_PATH="+binDir, "CNI_CACHE_DIR="+filepath.Join(n.data, "cache"))
			out, err = cmd.CombinedOutput()
			return err
		})
		return string(out), err
	}
	out, err := tool("add", "skiff", pod.Path())
	if err != nil {
		t.Fatalf("cnitool add: %v\n%s", err, out)
	}
	res, err := current.NewResult([]byte(out[strings.Index(out, "{"):]))
	if err != nil {
		t.Fatalf("cnitool add printed a result that does not parse as CNI 1.1.0: %v\n%s", err, out)
	}
	if r, _ := current.GetResult(res); len(r.IPs) != 1 {
		t.Fatalf("result %s: want one address", out)
	}
	for _, verb := range []string{"check", "status", "del", "del"} {
		if out, err := tool(verb, "skiff", pod.Path()); err != nil {
			t.Fatalf("cnitool %s: %v\n%s", verb, err, out)
		}
	}
	if out, err := tool("gc", "skiff", pod.Path()); err != nil {
		t.Fatalf("cnitool gc: %v\n%s", err, out)
	}
	if f, v := n.ipFiles(t), n.hostVeths(t); len(f)+len(v) > 0 {
		t.Fatalf("left after cnitool add/del/gc: %v %v", f, v)
	}
}
