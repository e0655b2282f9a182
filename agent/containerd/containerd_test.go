package containerd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func testConfig(dir string) Config {
	return Config{
		Dir: dir, CNIBinDir: "/var/lib/skiff/agent/cni/bin", CNIConfDir: "/var/lib/skiff/agent/cni/net.d",
		SandboxImage: "skiff.local/pause:v1",
		Binaries:     Binaries{Containerd: "/opt/skiff-containerd/containerd", Runc: "/opt/skiff-containerd/runc"},
	}
}

// TestShimSocketDir: the shims' sockets go with the node when containerd
// accepts the path, and to containerd's default when it is too long.
func TestShimSocketDir(t *testing.T) {
	if got := testConfig("/run/skiff/node-1").ShimSocketDir(); got != "/run/skiff/node-1/s" {
		t.Errorf("short dir: shim sockets in %q, want /run/skiff/node-1/s", got)
	}
	long := "/tmp/TestServiceLoadBalancing123456/001/agents/c1-n1/containerd"
	if got := testConfig(long).ShimSocketDir(); got != "" {
		t.Errorf("long dir: shim sockets in %q, want containerd's default", got)
	}
	text, err := testConfig(long).Render()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(text), "socket_dir") {
		t.Errorf("long dir: socket_dir rendered:\n%s", text)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out     string
		major   int
		version string
	}{
		{"containerd github.com/containerd/containerd/v2 v2.4.2 \n", 2, "v2.4.2"},
		{"containerd github.com/containerd/containerd/v2 v2.3.7 0a1b2c3\n", 2, "v2.3.7"},
		{"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n", 1, "1.6.20~ds1"},
	} {
		major, version, err := parseVersion(tc.out)
		if err != nil || major != tc.major || version != tc.version {
			t.Errorf("parseVersion(%q) = %d, %q, %v; want %d, %q", tc.out, major, version, err, tc.major, tc.version)
		}
	}
	if _, _, err := parseVersion("containerd\n"); err == nil {
		t.Error("no version: no error")
	}
}

// shippedContainerd is the containerd make build puts in _output, or ""
// (the test then skips: it needs the real binary to read the config).
func shippedContainerd(t *testing.T) string {
	p, err := filepath.Abs(filepath.Join("..", "..", "_output", BundleDir, "containerd"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no shipped containerd at %s (make build builds it)", p)
	}
	return p
}

// TestConfigAsContainerdReadsIt renders the node's configuration and has
// the shipped containerd print the configuration it would run with: each
// setting must land in the plugin that uses it (a misspelt plugin or key
// is ignored by containerd, not refused).
func TestConfigAsContainerdReadsIt(t *testing.T) {
	bin := shippedContainerd(t)
	dir := t.TempDir()
	c := testConfig("/run/skiff/node-1")
	text, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, text, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(context.Background(), bin, "--config", cfg, "config", "dump").Output()
	if err != nil {
		t.Fatalf("containerd config dump: %v", err)
	}
	got := settings(string(out))
	const (
		runtime = "plugins.'io.containerd.cri.v1.runtime'"
		runc    = runtime + ".containerd.runtimes.runc"
		images  = "plugins.'io.containerd.cri.v1.images'"
	)
	for key, want := range map[string]string{
		"root":  "'/run/skiff/node-1/root'",
		"state": "'/run/skiff/node-1/state'",
		"plugins.'io.containerd.server.v1.grpc'.address":        "'/run/skiff/node-1/containerd.sock'",
		"plugins.'io.containerd.server.v1.ttrpc'.address":       "'/run/skiff/node-1/containerd.sock.ttrpc'",
		"plugins.'io.containerd.nri.v1.nri'.socket_path":        "'/run/skiff/node-1/nri.sock'",
		"plugins.'io.containerd.shim.v1.manager'.socket_dir":    "'/run/skiff/node-1/s'",
		images + ".snapshotter":                                 "'overlayfs'",
		images + ".pinned_images.sandbox":                       "'skiff.local/pause:v1'",
		images + ".registry.config_path":                        "'/run/skiff/node-1/certs.d'",
		runtime + ".disable_apparmor":                           "true",
		runtime + ".restrict_oom_score_adj":                     "true",
		runtime + ".containerd.default_runtime_name":            "'runc'",
		runc + ".runtime_type":                                  "'io.containerd.runc.v2'",
		runc + ".options.Root":                                  "'/run/skiff/node-1/runc'",
		runc + ".options.BinaryName":                            "'/opt/skiff-containerd/runc'",
		runc + ".options.SystemdCgroup":                         "false",
		runtime + ".cni.bin_dirs":                               "['/var/lib/skiff/agent/cni/bin']",
		runtime + ".cni.conf_dir":                               "'/var/lib/skiff/agent/cni/net.d'",
		runtime + ".cni.max_conf_num":                           "1",
		"plugins.'io.containerd.cri.v1.runtime'.enable_selinux": "false",
	} {
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}
	if t.Failed() {
		t.Logf("containerd's view of the configuration:\n%s", out)
	}
}

// settings flattens TOML as containerd prints it (one [table] header per
// table, key = value lines) into "table.key" = "value".
func settings(text string) map[string]string {
	m := map[string]string{}
	table := ""
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			table = strings.Trim(l, "[]") + "."
			continue
		}
		if k, v, ok := strings.Cut(l, " = "); ok {
			m[table+k] = v
		}
	}
	return m
}
