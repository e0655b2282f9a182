package plugin_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/skiffnet/skiff/cni/install"
)

// TestHostPortThroughPortMap chains the real portmap plugin after skiff-cni
// with the conflist the agent installs, and gives three pods hostPort 54323
// the way containerd's CRI does (the portMappings capability), told apart
// by hostIP and protocol as in the upstream conformance test. Each address
// must reach its own pod from the node, including 127.0.0.1 from
// 127.0.0.1, and DEL must take the pod's rules away.
func TestHostPortThroughPortMap(t *testing.T) {
	pm, err := install.FindPortMap()
	if err != nil {
		t.Skip(err)
	}
	n := newNode(t)
	bin, conf := t.TempDir(), t.TempDir()
	if err := install.Install(bin, conf, install.Config{
		PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), DataDir: n.data,
		Binary: filepath.Join(binDir, "skiff-cni"), PortMap: pm,
	}); err != nil {
		t.Fatal(err)
	}
	l, err := libcni.ConfListFromFile(filepath.Join(conf, install.ConfName))
	if err != nil {
		t.Fatal(err)
	}
	n.net = libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(n.data, "cache"), nil)
	defer n.in(t, func() error { return install.RemovePortMapRules(install.NetworkName) })

	node := n.addr.String()
	pods := []struct{ name, hostIP, proto string }{
		{"pod1", "127.0.0.1", "tcp"},
		{"pod2", node, "tcp"},
		{"pod3", node, "udp"},
	}
	confs := map[string]*libcni.RuntimeConf{}
	for _, p := range pods {
		podNS := newNS(t)
		r := rt(p.name, podNS)
		r.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
			{"hostPort": 54323, "containerPort": 8080, "protocol": p.proto, "hostIP": p.hostIP},
		}}
		res := n.mustAdd(t, l, r)
		confs[p.name] = r
		serveName(t, podNS, p.proto, net.JoinHostPort(res.IPs[0].Address.IP.String(), "8080"), p.name)
	}

	for _, c := range []struct{ from, proto, to, want string }{
		{node, "tcp", "127.0.0.1", "pod1"}, // upstream: curl --interface NODE_IP http://127.0.0.1:PORT
		{"127.0.0.1", "tcp", "127.0.0.1", "pod1"},
		{"", "tcp", node, "pod2"},
		{"", "udp", node, "pod3"},
	} {
		got, err := askName(t, n, c.proto, c.from, net.JoinHostPort(c.to, "54323"))
		if err != nil || got != c.want {
			t.Errorf("%s from %q to %s:54323: %q %v, want %s", c.proto, c.from, c.to, got, err, c.want)
		}
	}

	if err := n.del(t, l, confs["pod2"]); err != nil {
		t.Fatal(err)
	}
	if got, err := askName(t, n, "tcp", "", net.JoinHostPort(node, "54323")); err == nil {
		t.Errorf("%s:54323 still answered (%q) after pod2's DEL", node, got)
	}
	if got, err := askName(t, n, "tcp", node, "127.0.0.1:54323"); err != nil || got != "pod1" {
		t.Errorf("after pod2's DEL, 127.0.0.1:54323 answered %q %v, want pod1", got, err)
	}
}

// serveName answers every TCP connection or UDP datagram to addr, inside
// the pod's namespace, with name.
func serveName(t *testing.T, pod ns.NetNS, proto, addr, name string) {
	t.Helper()
	err := pod.Do(func(ns.NetNS) error {
		if proto == "udp" {
			c, err := net.ListenPacket("udp4", addr)
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			go func() {
				buf := make([]byte, 512)
				for {
					_, from, err := c.ReadFrom(buf)
					if err != nil {
						return
					}
					c.WriteTo([]byte(name), from)
				}
			}()
			return nil
		}
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, name)
				c.Close()
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatalf("serve in %s: %v", name, err)
	}
}

// askName connects from the node's namespace (from the local address from,
// when set) and returns what the server says.
func askName(t *testing.T, n *node, proto, from, addr string) (string, error) {
	t.Helper()
	var got string
	err := n.in(t, func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		if from != "" {
			ip := net.ParseIP(from)
			if proto == "udp" {
				d.LocalAddr = &net.UDPAddr{IP: ip}
			} else {
				d.LocalAddr = &net.TCPAddr{IP: ip}
			}
		}
		c, err := d.Dial(proto+"4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if proto == "udp" {
			if _, err := c.Write([]byte("who")); err != nil {
				return err
			}
		}
		b, err := io.ReadAll(io.LimitReader(c, 64))
		if proto == "udp" && len(b) > 0 {
			err = nil // a datagram socket reads until the deadline
		}
		got = string(b)
		if got == "" && err == nil {
			err = fmt.Errorf("no answer")
		}
		return err
	})
	return got, err
}
