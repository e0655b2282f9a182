package install

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func fakeBinary(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "skiff-cni")
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestInstallWritesBinariesAndConflist(t *testing.T) {
	bin, conf := filepath.Join(t.TempDir(), "bin"), filepath.Join(t.TempDir(), "net.d")
	os.MkdirAll(conf, 0o755)
	for _, stale := range []string{"05-old.conf", "87-podman.conflist", "99-x.json"} {
		os.WriteFile(filepath.Join(conf, stale), []byte(`{}`), 0o644)
	}
	os.WriteFile(filepath.Join(conf, "README"), []byte("keep"), 0o644)

	c := Config{PodCIDR: netip.MustParsePrefix("10.244.3.0/24"), DataDir: "/var/lib/skiff/n1/cni", MTU: 1450, Binary: fakeBinary(t, "v1")}
	if err := Install(bin, conf, c); err != nil {
		t.Fatal(err)
	}
	if got := names(t, bin); !slices.Equal(got, []string{"loopback", "skiff-cni"}) {
		t.Fatalf("bin dir holds %v", got)
	}
	if got := names(t, conf); !slices.Equal(got, []string{ConfName, "README"}) {
		t.Fatalf("conf dir holds %v, want only Skiff's conflist and the unrelated README", got)
	}
	// The runtime's own loader must accept it and find our settings.
	l, err := libcni.ConfListFromFile(filepath.Join(conf, ConfName))
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != "skiff" || l.CNIVersion != "1.1.0" || len(l.Plugins) != 1 || l.Plugins[0].Network.Type != "skiff-cni" {
		t.Fatalf("conflist %+v", l)
	}
	for _, want := range []string{`"podCIDR":"10.244.3.0/24"`, `"mtu":1450`, `"dataDir":"/var/lib/skiff/n1/cni"`} {
		if !bytes.Contains(l.Plugins[0].Bytes, []byte(want)) {
			t.Errorf("plugin config %s lacks %s", l.Plugins[0].Bytes, want)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(conf, ConfName))
	if !bytes.Contains(raw, []byte(`"cniVersion": "1.0.0"`)) {
		t.Errorf("conflist must keep cniVersion 1.0.0 for containerd 1.6:\n%s", raw)
	}

	// A second install with a new binary replaces it.
	c.Binary = fakeBinary(t, "v2")
	if err := Install(bin, conf, c); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"skiff-cni", "loopback"} {
		if got, _ := os.ReadFile(filepath.Join(bin, b)); string(got) != "v2" {
			t.Errorf("%s holds %q after upgrade, want v2", b, got)
		}
	}
	if got := names(t, bin); len(got) != 2 {
		t.Errorf("temporary files left in bin dir: %v", got)
	}
}

func TestInstallWithPodCIDRFile(t *testing.T) {
	bin, conf := t.TempDir(), t.TempDir()
	cidrFile := filepath.Join(t.TempDir(), "podcidr")
	if err := Install(bin, conf, Config{PodCIDRFile: cidrFile, Binary: fakeBinary(t, "x"), NoLoopback: true}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(conf, ConfName))
	if !bytes.Contains(raw, []byte(cidrFile)) || bytes.Contains(raw, []byte(`"podCIDR"`)) {
		t.Fatalf("conflist %s", raw)
	}
	if got := names(t, bin); !slices.Equal(got, []string{"skiff-cni"}) {
		t.Fatalf("bin dir %v, want no loopback", got)
	}
	if err := WritePodCIDR(cidrFile, netip.MustParsePrefix("10.244.5.7/24")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(cidrFile); string(got) != "10.244.5.0/24\n" {
		t.Fatalf("pod range file holds %q", got)
	}
}

func TestInstallErrors(t *testing.T) {
	if err := Install(t.TempDir(), t.TempDir(), Config{Binary: fakeBinary(t, "x")}); err == nil {
		t.Error("install without a pod range succeeded")
	}
	err := Install(t.TempDir(), t.TempDir(), Config{PodCIDR: netip.MustParsePrefix("10.244.0.0/24"), Binary: "/nonexistent/skiff-cni"})
	if err == nil {
		t.Error("install of a missing binary succeeded")
	}
}

func TestRemove(t *testing.T) {
	bin, conf := t.TempDir(), t.TempDir()
	if err := Install(bin, conf, Config{PodCIDR: netip.MustParsePrefix("10.244.0.0/24"), Binary: fakeBinary(t, "x")}); err != nil {
		t.Fatal(err)
	}
	if err := Remove(bin, conf); err != nil {
		t.Fatal(err)
	}
	if n := len(names(t, bin)) + len(names(t, conf)); n != 0 {
		t.Fatalf("%d files left", n)
	}
	if err := Remove(bin, conf); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}
