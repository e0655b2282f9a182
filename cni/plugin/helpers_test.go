package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// binDir holds the skiff-cni binary (and cnitool) built once for the run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "cni/plugin tests create network namespaces and veths: run them as root")
		return 1
	}
	dir, err := os.MkdirTemp("", "skiff-cni-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, b := range []struct{ out, pkg string }{
		{"skiff-cni", "github.com/skiffnet/skiff/cmd/skiff-cni"},
		{"cnitool", "github.com/containernetworking/cni/cnitool"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	if err := os.Link(filepath.Join(dir, "skiff-cni"), filepath.Join(dir, "loopback")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// node is a network namespace standing for a node: the plugin runs in it,
// as it runs in a simulated node's namespace under containerd.
type node struct {
	ns   ns.NetNS
	addr net.IP // the node's address on its uplink
	data string // IPAM data dir
	conf string // conflist dir
	net  *libcni.CNIConfig
}

const uplinkMTU = 1400

func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		if err := testutils.UnmountNS(n); err != nil {
			t.Errorf("remove namespace: %v", err)
		}
	})
	return n
}

// newNode makes a node namespace with an uplink (a veth pair, MTU 1400)
// carrying 192.168.77.2/24 and a default route, so the plugin finds an MTU.
func newNode(t *testing.T) *node {
	t.Helper()
	n := &node{ns: newNS(t), addr: net.IPv4(192, 168, 77, 2), data: t.TempDir(), conf: t.TempDir()}
	err := n.ns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		up := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink", MTU: uplinkMTU}, PeerName: "uplink-peer"}
		if err := netlink.LinkAdd(up); err != nil {
			return err
		}
		for _, name := range []string{"uplink", "uplink-peer"} {
			l, _ := netlink.LinkByName(name)
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		l, _ := netlink.LinkByName("uplink")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: n.addr, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IPv4(192, 168, 77, 1)})
	})
	if err != nil {
		t.Fatalf("set up node namespace: %v", err)
	}
	n.net = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(n.data, "cache"), nil)
	return n
}

// conflist is the configuration the tests use; extra fields go into the
// skiff-cni entry.
func (n *node) conflist(t *testing.T, extra map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	p := map[string]any{"type": "skiff-cni", "podCIDR": "10.244.1.0/24", "dataDir": n.data}
	for k, v := range extra {
		if v == nil {
			delete(p, k)
		} else {
			p[k] = v
		}
	}
	b, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "skiff", "plugins": []any{p}})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(n.conf, "10-skiff.conflist"), b, 0o644)
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// in runs f with the calling thread in the node namespace, so the plugin
// processes libcni starts are in it too (a child inherits the namespace of
// the thread that forks it).
func (n *node) in(t *testing.T, f func() error) error {
	t.Helper()
	return n.ns.Do(func(ns.NetNS) error { return f() })
}

func rt(id string, pod ns.NetNS) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"}
}

func (n *node) add(t *testing.T, l *libcni.NetworkConfigList, r *libcni.RuntimeConf) (*current.Result, error) {
	t.Helper()
	var res types.Result
	err := n.in(t, func() (err error) {
		res, err = n.net.AddNetworkList(context.Background(), l, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Through the spec's own types: the result must parse as 1.1.0.
	return current.GetResult(res)
}

func (n *node) mustAdd(t *testing.T, l *libcni.NetworkConfigList, r *libcni.RuntimeConf) *current.Result {
	t.Helper()
	res, err := n.add(t, l, r)
	if err != nil {
		t.Fatalf("ADD %s: %v", r.ContainerID, err)
	}
	return res
}

func (n *node) del(t *testing.T, l *libcni.NetworkConfigList, r *libcni.RuntimeConf) error {
	t.Helper()
	return n.in(t, func() error { return n.net.DelNetworkList(context.Background(), l, r) })
}

func (n *node) check(t *testing.T, l *libcni.NetworkConfigList, r *libcni.RuntimeConf) error {
	t.Helper()
	return n.in(t, func() error { return n.net.CheckNetworkList(context.Background(), l, r) })
}

// cniCode is the CNI error code of err, or -1.
func cniCode(err error) int {
	var e *types.Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	return -1
}

// ipFiles lists the IPAM address files left in the node's data dir.
func (n *node) ipFiles(t *testing.T) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(n.data, "networks", "skiff", "*.*.*.*"))
	return m
}

// hostVeths lists the node's skiff host veths.
func (n *node) hostVeths(t *testing.T) []string {
	t.Helper()
	var names []string
	if err := n.in(t, func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "skf") {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return names
}

// podRoutes lists the node's routes into the pod range.
func (n *node) podRoutes(t *testing.T) []string {
	t.Helper()
	var dsts []string
	if err := n.in(t, func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst != nil && strings.HasPrefix(r.Dst.String(), "10.244.") {
				dsts = append(dsts, r.Dst.String())
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return dsts
}

// dial connects from namespace from to addr and returns the address the
// listener saw the connection come from.
func dial(t *testing.T, from, to ns.NetNS, addr net.IP) (net.IP, error) {
	t.Helper()
	var ln net.Listener
	if err := to.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(addr.String(), "0"))
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	defer ln.Close()
	seen := make(chan net.IP, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(seen)
			return
		}
		defer c.Close()
		seen <- c.RemoteAddr().(*net.TCPAddr).IP
	}()
	err := from.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 3*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return nil, err
	}
	select {
	case ip := <-seen:
		return ip, nil
	case <-time.After(3 * time.Second):
		return nil, errors.New("listener saw no connection")
	}
}
