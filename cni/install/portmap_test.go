package install

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netns"
)

func TestInstallChainsPortMap(t *testing.T) {
	pm, err := FindPortMap()
	if err != nil {
		t.Skip(err)
	}
	bin, conf := filepath.Join(t.TempDir(), "bin"), filepath.Join(t.TempDir(), "net.d")
	c := Config{PodCIDR: netip.MustParsePrefix("10.244.3.0/24"), Binary: fakeBinary(t, "v1"), PortMap: pm}
	if err := Install(bin, conf, c); err != nil {
		t.Fatal(err)
	}
	if got := names(t, bin); !slices.Equal(got, []string{"loopback", "portmap", "skiff-cni"}) {
		t.Fatalf("bin dir holds %v", got)
	}
	l, err := libcni.ConfListFromFile(filepath.Join(conf, ConfName))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Plugins) != 2 || l.Plugins[1].Network.Type != "portmap" || !l.Plugins[1].Network.Capabilities["portMappings"] {
		t.Fatalf("portmap not chained with the portMappings capability: %s", l.Bytes)
	}
	// The runtime gives every plugin the list's version: it must be one
	// the installed portmap speaks.
	vers, err := portMapVersions(pm)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(vers, l.CNIVersion) {
		t.Fatalf("conflist version %s, but %s speaks only %v", l.CNIVersion, pm, vers)
	}
	if err := Remove(bin, conf); err != nil {
		t.Fatal(err)
	}
	if got := names(t, bin); len(got) != 0 {
		t.Errorf("Remove left %v", got)
	}
}

func TestInstallPortMapErrors(t *testing.T) {
	notCNI := filepath.Join(t.TempDir(), "portmap")
	os.WriteFile(notCNI, []byte("#!/bin/sh\necho nonsense\n"), 0o755)
	err := Install(t.TempDir(), t.TempDir(), Config{PodCIDR: netip.MustParsePrefix("10.244.3.0/24"), Binary: fakeBinary(t, "v1"), PortMap: notCNI})
	if err == nil || !strings.Contains(err.Error(), notCNI) {
		t.Fatalf("Install with a portmap that is not a CNI plugin: %v, want an error naming it", err)
	}
}

// RemovePortMapRules runs in a namespace of its own with the chains that
// portmap makes for two networks: Skiff's go, another network's stay, and
// the shared chains go with the last user.
func TestRemovePortMapRules(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // this thread is now in it; exec'd iptables too
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer netns.Set(orig)

	ipt := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("iptables %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// What portmap 1.1 writes for one pod of each network.
	for _, c := range []string{dnatChain, masqChain, setMarkChain, "CNI-DN-skiff1", "CNI-DN-podman1"} {
		ipt("-N", c)
	}
	ipt("-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", dnatChain)
	ipt("-A", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", dnatChain)
	ipt("-A", "POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", masqChain)
	ipt("-A", masqChain, "-m", "mark", "--mark", "0x2000/0x2000", "-j", "MASQUERADE")
	ipt("-A", setMarkChain, "-j", "MARK", "--set-xmark", "0x2000/0x2000")
	for _, n := range []string{"skiff", "podman"} {
		ipt("-A", dnatChain, "-p", "tcp", "-m", "comment", "--comment", `dnat name: "`+n+`" id: "abc"`,
			"-m", "multiport", "--dports", "54323", "-j", "CNI-DN-"+n+"1")
		ipt("-A", "CNI-DN-"+n+"1", "-p", "tcp", "-d", "127.0.0.1/32", "--dport", "54323", "-j", setMarkChain)
	}

	if err := RemovePortMapRules(NetworkName); err != nil {
		t.Fatal(err)
	}
	all := ipt("-S")
	if strings.Contains(all, "CNI-DN-skiff1") || strings.Contains(all, `\"skiff\"`) {
		t.Fatalf("Skiff's hostPort rules left:\n%s", all)
	}
	if !strings.Contains(all, "-N CNI-DN-podman1") || !strings.Contains(all, "-A PREROUTING -m addrtype --dst-type LOCAL -j "+dnatChain) {
		t.Fatalf("another network's hostPort rules were removed:\n%s", all)
	}

	// The other network's pod goes too, and with it the last user.
	if err := RemovePortMapRules("podman"); err != nil {
		t.Fatal(err)
	}
	if err := RemovePortMapRules(NetworkName); err != nil {
		t.Fatal(err)
	}
	if all := ipt("-S"); strings.Contains(all, "CNI-HOSTPORT") {
		t.Fatalf("portmap's shared chains left once no network uses them:\n%s", all)
	}
	if err := RemovePortMapRules(NetworkName); err != nil {
		t.Fatalf("a second run where nothing is left: %v", err)
	}
}
