package routes

// These tests need root: they build a small cluster of network namespaces
// (two nodes and an outside host on a bridge), attach pods with the real
// skiff-cni binary and program routes with the real appliers.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiffnet/skiff/cni/netaddr"
)

var (
	buildOnce sync.Once
	pluginDir string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pluginDir != "" {
		os.RemoveAll(pluginDir)
	}
	os.Exit(code)
}

// pluginBinary builds skiff-cni once per test run.
func pluginBinary(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates network namespaces, veths and VXLAN devices: run it as root")
	}
	buildOnce.Do(func() {
		pluginDir, buildErr = os.MkdirTemp("", "skiff-routes-test-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "skiff-cni"), "github.com/skiffnet/skiff/cmd/skiff-cni")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build skiff-cni: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return pluginDir
}

func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		testutils.UnmountNS(n)
	})
	return n
}

func ipCmd(t *testing.T, n ns.NetNS, args ...string) {
	t.Helper()
	if n != nil {
		args = append([]string{"-n", filepath.Base(n.Path())}, args...)
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

type testNode struct {
	name string
	ns   ns.NetNS
	ip   netip.Addr
	cidr netip.Prefix
	data string
}

type lan struct {
	infra, outside ns.NetNS
	nodes          []*testNode
}

// newLAN builds a bridge in an infra namespace with two node namespaces
// (172.31.0.11, .12) and an outside host (172.31.0.100) on it.
func newLAN(t *testing.T) *lan {
	t.Helper()
	l := &lan{infra: newNS(t)}
	ipCmd(t, l.infra, "link", "add", "br0", "type", "bridge")
	ipCmd(t, l.infra, "link", "set", "br0", "up")
	attach := func(n ns.NetNS, peer, addr string) {
		ipCmd(t, l.infra, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", n.Path())
		ipCmd(t, l.infra, "link", "set", peer, "master", "br0", "up")
		ipCmd(t, n, "addr", "add", addr+"/24", "dev", "eth0")
		ipCmd(t, n, "link", "set", "eth0", "up")
		ipCmd(t, n, "link", "set", "lo", "up")
	}
	l.outside = newNS(t)
	attach(l.outside, "out", "172.31.0.100")
	for i := range 2 {
		n := &testNode{
			name: fmt.Sprintf("n%d", i+1), ns: newNS(t),
			ip:   netip.MustParseAddr(fmt.Sprintf("172.31.0.%d", 11+i)),
			cidr: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i)),
			data: t.TempDir(),
		}
		attach(n.ns, fmt.Sprintf("n%d", i+1), n.ip.String())
		ipCmd(t, n.ns, "route", "add", "default", "via", "172.31.0.1")
		l.nodes = append(l.nodes, n)
	}
	return l
}

func (l *lan) nodeObjects(only ...string) []*corev1.Node {
	var out []*corev1.Node
	for _, n := range l.nodes {
		if len(only) > 0 && !strings.Contains(strings.Join(only, ","), n.name) {
			continue
		}
		out = append(out, node(n.name, n.ip.String(), n.cidr.String()))
	}
	return out
}

// program applies the desired state of every node built from nodes, as
// each node's controller would.
func (l *lan) program(t *testing.T, mode Mode, nodes []*corev1.Node) {
	t.Helper()
	for _, n := range l.nodes {
		if !slices.ContainsFunc(nodes, func(o *corev1.Node) bool { return o.Name == n.name }) {
			continue // a node that left runs no controller
		}
		d, _ := Build(n.name, n.ip, nodes)
		err := n.ns.Do(func(ns.NetNS) error {
			nl, err := NewNetlink(mode, n.ip)
			if err != nil {
				return err
			}
			defer nl.Close()
			if err := nl.Apply(d); err != nil {
				return err
			}
			m, err := NewMasquerade()
			if err != nil {
				return err
			}
			defer m.Close()
			return errors.Join(m.Apply(netip.MustParsePrefix("10.244.0.0/16"), d.NodeIPs), netaddr.EnableForwarding())
		})
		if err != nil {
			t.Fatalf("program %s: %v", n.name, err)
		}
	}
}

// addPod attaches a new pod namespace to node n with skiff-cni.
func addPod(t *testing.T, n *testNode, mtu int) (ns.NetNS, net.IP) {
	t.Helper()
	bin := pluginBinary(t)
	pod := newNS(t)
	list, err := libcni.ConfListFromBytes(fmt.Appendf(nil,
		`{"cniVersion":"1.1.0","name":"skiff","plugins":[{"type":"skiff-cni","podCIDR":"%s","dataDir":"%s","mtu":%d}]}`,
		n.cidr, n.data, mtu))
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(n.data, "cache"), nil)
	var res *current.Result
	err = n.ns.Do(func(ns.NetNS) error {
		r, err := cni.AddNetworkList(context.Background(), list, &libcni.RuntimeConf{ContainerID: filepath.Base(pod.Path()), NetNS: pod.Path(), IfName: "eth0"})
		if err != nil {
			return err
		}
		res, err = current.GetResult(r)
		return err
	})
	if err != nil {
		t.Fatalf("ADD pod on %s: %v", n.name, err)
	}
	return pod, res.IPs[0].Address.IP
}

// connect dials addr:port in to from namespace from and returns the source
// address the listener saw.
func connect(from, to ns.NetNS, addr net.IP) (net.IP, error) {
	var ln net.Listener
	if err := to.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(addr.String(), "0"))
		return err
	}); err != nil {
		return nil, err
	}
	defer ln.Close()
	seen := make(chan net.IP, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			seen <- c.RemoteAddr().(*net.TCPAddr).IP
			c.Close()
		}
	}()
	if err := from.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		return nil, err
	}
	select {
	case ip := <-seen:
		return ip, nil
	case <-time.After(2 * time.Second):
		return nil, errors.New("no connection accepted")
	}
}

func TestPodNetworkAcrossNodes(t *testing.T) {
	for _, mode := range []Mode{ModeRouted, ModeVXLAN} {
		t.Run(string(mode), func(t *testing.T) {
			pluginBinary(t)
			l := newLAN(t)
			l.program(t, mode, l.nodeObjects())
			n1, n2 := l.nodes[0], l.nodes[1]
			mtu := 1500
			if mode == ModeVXLAN {
				mtu -= VXLANOverhead
			}
			pod1, ip1 := addPod(t, n1, mtu)
			pod1b, ip1b := addPod(t, n1, mtu)
			pod2, ip2 := addPod(t, n2, mtu)

			for _, c := range []struct {
				what     string
				from, to ns.NetNS
				addr     net.IP
				wantSrc  string
			}{
				{"pod→pod on one node", pod1, pod1b, ip1b, ip1.String()},
				{"pod→pod across nodes", pod1, pod2, ip2, ip1.String()},
				{"pod→pod across nodes, back", pod2, pod1, ip1, ip2.String()},
				{"pod→other node", pod1, n2.ns, n2.ip.AsSlice(), ip1.String()},
				{"pod→own node", pod1, n1.ns, n1.ip.AsSlice(), ip1.String()},
				{"node→pod on another node", n2.ns, pod1, ip1, ""},
				{"pod→outside is masqueraded", pod1, l.outside, net.ParseIP("172.31.0.100"), n1.ip.String()},
			} {
				src, err := connect(c.from, c.to, c.addr)
				if err != nil {
					t.Errorf("%s (%s): %v", c.what, c.addr, err)
					continue
				}
				if c.wantSrc != "" && src.String() != c.wantSrc {
					t.Errorf("%s: listener saw %s, want %s", c.what, src, c.wantSrc)
				}
			}

			if mode == ModeVXLAN {
				checkVXLANDevice(t, n1)
			}

			// n2 leaves: n1 stops routing its range (and forgets its VTEP).
			l.program(t, mode, l.nodeObjects("n1"))
			n1.ns.Do(func(ns.NetNS) error {
				routes, _ := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Protocol: Proto, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
				if len(routes) != 0 {
					t.Errorf("routes left after n2 left: %v", routes)
				}
				if vx, err := netlink.LinkByName(DeviceName); err == nil {
					fdb, _ := netlink.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
					arp, _ := netlink.NeighList(vx.Attrs().Index, unix.AF_INET)
					if len(fdb)+len(arp) != 0 {
						t.Errorf("entries left after n2 left: fdb %v, neighbours %v", fdb, arp)
					}
				}
				return nil
			})
			if _, err := connect(pod1, pod2, ip2); err == nil {
				t.Error("pod→pod across nodes still connects after n2 left")
			}
		})
	}
}

func checkVXLANDevice(t *testing.T, n *testNode) {
	t.Helper()
	n.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(DeviceName)
		if err != nil {
			t.Errorf("no %s: %v", DeviceName, err)
			return nil
		}
		vx := l.(*netlink.Vxlan)
		self := Peer{NodeIP: n.ip, PodCIDR: n.cidr}
		if vx.VxlanId != VNI || vx.Port != VXLANPort || vx.MTU != 1450 || vx.HardwareAddr.String() != self.VTEPMAC().String() || vx.Learning {
			t.Errorf("%s: vni %d port %d mtu %d mac %s learning %v", DeviceName, vx.VxlanId, vx.Port, vx.MTU, vx.HardwareAddr, vx.Learning)
		}
		if vx.Statistics == nil || vx.Statistics.TxPackets == 0 {
			t.Errorf("%s sent nothing: cross-node pod traffic did not use the overlay", DeviceName)
		}
		return nil
	})
}

// TestApplyKeepsForeignRoutesAndSwitchesModes checks the applier removes
// only its own routes, and that moving from vxlan to routed removes the
// device.
func TestApplyKeepsForeignRoutesAndSwitchesModes(t *testing.T) {
	pluginBinary(t)
	l := newLAN(t)
	n1 := l.nodes[0]
	ipCmd(t, n1.ns, "route", "add", "10.99.0.0/16", "via", "172.31.0.1")
	l.program(t, ModeVXLAN, l.nodeObjects())
	l.program(t, ModeRouted, l.nodeObjects())
	n1.ns.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName(DeviceName); err == nil {
			t.Errorf("%s still exists in routed mode", DeviceName)
		}
		routes, _ := netlink.RouteList(nil, unix.AF_INET)
		var got []string
		for _, r := range routes {
			if r.Dst != nil {
				got = append(got, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
			}
		}
		all := strings.Join(got, "; ")
		for _, want := range []string{"10.99.0.0/16 via 172.31.0.1", "10.244.1.0/24 via 172.31.0.12"} {
			if !strings.Contains(all, want) {
				t.Errorf("routes %q lack %q", all, want)
			}
		}
		return nil
	})
	// The masquerade table is there once, with the node set.
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(n1.ns.Path()), "nft", "list", "table", "ip", Table).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "172.31.0.11") || !strings.Contains(string(out), "masquerade") {
		t.Fatalf("nft table: %v\n%s", err, out)
	}
}
