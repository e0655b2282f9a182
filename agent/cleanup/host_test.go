package cleanup

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestHostLeftovers is what a killed node leaves in the machine-wide paths:
// its shims' sockets, runc state, the kubelet's device plugin socket and
// container log links. Only the node's own go; another containerd's stay.
func TestHostLeftovers(t *testing.T) {
	root := t.TempDir()
	hp := hostPaths{
		ContainerdRun: filepath.Join(root, "run/containerd"),
		KubeletDir:    filepath.Join(root, "var/lib/kubelet"),
		ContainerLogs: filepath.Join(root, "var/log/containers"),
	}
	node := filepath.Join(root, "run/skiff/n1")
	state := filepath.Join(root, "var/lib/skiff")
	ours := filepath.Join(hp.ContainerdRun, "s", "aaaa")
	ours2 := filepath.Join(hp.ContainerdRun, "s", "cccc")
	theirs := filepath.Join(hp.ContainerdRun, "s", "bbbb")
	write(t, filepath.Join(node, "state/io.containerd.runtime.v2.task/k8s.io/c1/address"), "unix://"+ours+"\n")
	// containerd 2.x records the shim in bootstrap.json.
	write(t, filepath.Join(node, "state/io.containerd.runtime.v2.task/k8s.io/c3/bootstrap.json"),
		`{"version":3,"address":"unix://`+ours2+`","protocol":"ttrpc"}`)
	// A corrupt or hostile address file names a path outside the shims' directory.
	write(t, filepath.Join(node, "state/io.containerd.runtime.v2.task/k8s.io/c2/address"), "unix://"+filepath.Join(root, "precious"))
	write(t, filepath.Join(root, "precious"), "")
	write(t, ours, "")
	write(t, ours2, "")
	write(t, theirs, "")
	write(t, filepath.Join(hp.ContainerdRun, "runc/k8s.io/c1/state.json"), "{}")
	write(t, filepath.Join(hp.KubeletDir, "device-plugins/kubelet.sock"), "")
	write(t, filepath.Join(hp.KubeletDir, "device-plugins/kubelet_internal_checkpoint"), "{}")
	write(t, filepath.Join(state, "agent/n1/pod-logs/default_p_uid/c/0.log"), "")
	if err := os.MkdirAll(hp.ContainerLogs, 0o755); err != nil {
		t.Fatal(err)
	}
	ourLink := filepath.Join(hp.ContainerLogs, "p_default_c-c1.log")
	otherLink := filepath.Join(hp.ContainerLogs, "q_default_c-c9.log")
	os.Symlink(filepath.Join(state, "agent/n1/pod-logs/default_p_uid/c/0.log"), ourLink)
	os.Symlink("/var/log/pods/default_q/c/0.log", otherLink)

	tasks := containerdTasksIn([]string{node}, hp)
	if len(tasks) != 3 {
		t.Fatalf("tasks = %+v, want c1, c2 and c3", tasks)
	}
	for _, s := range hostStepsIn(tasks, []string{state}, hp) {
		if err := s.Run(); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
	}
	for _, gone := range []string{ours, ours2, filepath.Join(hp.ContainerdRun, "runc"), ourLink, hp.KubeletDir} {
		if exists(gone) {
			t.Errorf("%s is left", gone)
		}
	}
	for _, kept := range []string{theirs, filepath.Join(root, "precious"), otherLink} {
		if !exists(kept) {
			t.Errorf("%s, not the node's, was removed", kept)
		}
	}
}

// TestDevicePluginsOfARunningKubelet: the kubelet of another node on the
// machine still serves its socket, which must stay.
func TestDevicePluginsOfARunningKubelet(t *testing.T) {
	root := t.TempDir()
	hp := hostPaths{ContainerdRun: filepath.Join(root, "c"), KubeletDir: filepath.Join(root, "k"), ContainerLogs: filepath.Join(root, "l")}
	sock := filepath.Join(hp.KubeletDir, "device-plugins", "kubelet.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, s := range hostStepsIn(nil, nil, hp) {
		if err := s.Run(); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
	}
	if !exists(sock) {
		t.Error("removed the socket a running kubelet serves")
	}
}
