package cluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/skiffnet/skiff/test/harness"
)

// TestInstallAgent is issue 8's acceptance point 3: the units `skiff
// install` writes pass `systemd-analyze verify`, and the agent command line
// in the unit joins a new node that then runs pods.
func TestInstallAgent(t *testing.T) {
	c := Start(t, Options{Nodes: 1, WaitReady: true})
	root := harness.TempDir(t, "install")
	n := c.AddHost()
	state := filepath.Join(c.Dir, "agents")
	out, err := harness.Run(c.Bin, "install", "agent", "--root", root, "--no-start", "--server", c.ServerURL(),
		"--token", c.Token(), "--node-name", n.Name, "--node-ip", n.IP, "--",
		"--data-dir", state, "--insecure-registry", Registry, "--images-dir", filepath.Join(root, "var/lib/skiff/images"),
		"--lb-cgroup", "/skiff-"+n.Name,
		"--container-runtime-endpoint", "unix://"+filepath.Join(state, n.Name, "containerd", "containerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := harness.Run(c.Bin, "install", "server", "--root", root, "--no-start"); err != nil {
		t.Fatal(err)
	}
	t.Log(out)
	// systemd-analyze needs the system's own units under --root to resolve
	// the default dependencies (sysinit.target, ...).
	if err := os.MkdirAll(filepath.Join(root, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", "/lib/systemd", filepath.Join(root, "lib")+"/").CombinedOutput(); err != nil {
		t.Fatalf("copy systemd units: %v %s", err, out)
	}
	for _, u := range []string{"skiff-agent", "skiff-server"} {
		out, err := exec.Command("systemd-analyze", "verify", "--root="+root, "/etc/systemd/system/"+u+".service").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("systemd-analyze verify %s.service: %v\n%s", u, err, out)
		}
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/skiff-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(filepath.Join(root, "etc/skiff/skiff-agent.env"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc/skiff/skiff-agent.env")); fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(string(unit), c.Token()) {
		t.Error("the unit file holds the join token; it belongs in the 0600 environment file")
	}
	args := execStart(t, string(unit), string(env))
	if args[0] != "/usr/local/bin/skiff" {
		t.Fatalf("ExecStart runs %s", args[0])
	}
	// Run what systemd would, with the binary installed under root.
	n.Run(filepath.Join(root, args[0]), args[1:]...)
	c.waitNodes(true)
	c.MustKubectl("run", "on-new-node", "--image", "skiff.local/echo:v1",
		"--overrides", `{"spec":{"nodeName":"`+n.Name+`"}}`)
	c.WaitPod(t, "on-new-node", podReady)
	if _, err := os.Stat(filepath.Join(root, "var/lib/skiff/images/pause.tar")); err != nil {
		t.Errorf("install did not put the sandbox image in place: %v", err)
	}
}

// execStart splits the unit's ExecStart as systemd does for our quoting,
// expanding ${NAME} from the environment file.
func execStart(t *testing.T, unit, env string) []string {
	t.Helper()
	vars := map[string]string{}
	for _, l := range strings.Split(env, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			vars[k] = v
		}
	}
	m := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatalf("no ExecStart in:\n%s", unit)
	}
	var args []string
	for _, f := range regexp.MustCompile(`"(?:[^"\\]|\\.)*"|\S+`).FindAllString(m[1], -1) {
		if strings.HasPrefix(f, `"`) {
			f = strings.NewReplacer(`\"`, `"`, `\\`, `\`, `$$`, `$`, `%%`, `%`).Replace(f[1 : len(f)-1])
		} else if strings.HasPrefix(f, "${") {
			f = vars[strings.TrimSuffix(strings.TrimPrefix(f, "${"), "}")]
		}
		args = append(args, f)
	}
	return args
}
