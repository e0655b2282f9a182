// Package cluster builds a multi-node Skiff cluster on one machine for
// end-to-end tests: one network namespace per node, each with its own
// `skiff agent` (and its own containerd), joined by a bridge in a namespace
// of the harness's own; the server runs in that namespace too, and a client
// namespace on the bridge stands for "outside the cluster". Everything a
// cluster creates is named after its random ID and removed on cleanup.
package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"

	"github.com/skiffnet/skiff/test/harness"
)

const (
	bridgeIP = "172.30.0.1"
	subnet   = "/24"
	clientIP = "172.30.0.100"
)

// NodeIP is the address of node i (counting from 0) on the bridge.
func NodeIP(i int) string { return fmt.Sprintf("172.30.0.%d", 11+i) }

// netns is a named network namespace (/run/netns/NAME).
type namespace string

func (n namespace) Path() string { return "/run/netns/" + string(n) }

func newID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "s" + hex.EncodeToString(b)
}

// ip runs an iproute2 command, optionally inside a namespace.
func ip(ns namespace, args ...string) error {
	if ns != "" {
		args = append([]string{"-n", string(ns)}, args...)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func sysctl(ns namespace, kv string) error {
	out, err := exec.Command("ip", "netns", "exec", string(ns), "sysctl", "-qw", kv).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sysctl %s in %s: %w: %s", kv, ns, err, out)
	}
	return nil
}

// addNetns creates a namespace with loopback up, removed at cleanup.
func addNetns(t harness.T, name string) namespace {
	t.Helper()
	ns := namespace(name)
	if err := ip("", "netns", "add", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ip("", "netns", "del", name) })
	if err := ip(ns, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return ns
}

// buildBridge makes the infra namespace with the bridge every host joins.
func buildBridge(t harness.T, id string) namespace {
	t.Helper()
	infra := addNetns(t, id+"-infra")
	for _, step := range [][]string{
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", bridgeIP + subnet, "dev", "br0"},
		{"link", "set", "br0", "up"},
	} {
		if err := ip(infra, step...); err != nil {
			t.Fatal(err)
		}
	}
	if err := sysctl(infra, "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	return infra
}

// attach creates host namespace name with eth0 at addr on the bridge.
func attach(t harness.T, infra namespace, id, short, name, addr string) namespace {
	t.Helper()
	ns := addNetns(t, name)
	peer := id + short // at most 15 characters: "s1a2b3c" + "n1"
	for _, step := range []struct {
		ns   namespace
		args []string
	}{
		{infra, []string{"link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", string(ns)}},
		{infra, []string{"link", "set", peer, "master", "br0", "up"}},
		{ns, []string{"addr", "add", addr + subnet, "dev", "eth0"}},
		{ns, []string{"link", "set", "eth0", "up"}},
		{ns, []string{"route", "add", "default", "via", bridgeIP}},
	} {
		if err := ip(step.ns, step.args...); err != nil {
			t.Fatal(err)
		}
	}
	return ns
}
