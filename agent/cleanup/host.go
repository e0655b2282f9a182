package cleanup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Paths the upstream kubelet and Debian's containerd use whatever they are
// configured with: they are shared by every node on the machine, so only
// what the stopped nodes made is removed, and a directory only once empty.
type hostPaths struct {
	// ContainerdRun holds the shims' sockets (s/HASH; the shim's socket
	// directory is compiled in) and runc's state (runc/NAMESPACE/ID, the
	// default runc root of containerd versions before Skiff set its own).
	ContainerdRun string
	// KubeletDir holds device-plugins/, where every kubelet serves the
	// device plugin registration socket: its path is compiled in, unlike
	// the rest of the kubelet's state, which is under its --root-dir.
	KubeletDir string
	// ContainerLogs holds the kubelet's links to container logs.
	ContainerLogs string
}

var defaultHostPaths = hostPaths{
	ContainerdRun: "/run/containerd",
	KubeletDir:    "/var/lib/kubelet",
	ContainerLogs: "/var/log/containers",
}

// task is a container a node's containerd ran: where its shim listened and
// its runc state directory (when runc used the default root).
type task struct {
	namespace, id string
	shimSocket    string
}

// containerdTasks lists the tasks in the containerd dirs' state (one
// directory per namespace and container, naming the shim's socket).
func containerdTasks(runtimeDirs []string) []task {
	return containerdTasksIn(runtimeDirs, defaultHostPaths)
}

func containerdTasksIn(runtimeDirs []string, hp hostPaths) []task {
	var out []task
	for _, dir := range runtimeDirs {
		bundles, _ := filepath.Glob(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", "*", "*"))
		for _, b := range bundles {
			t := task{namespace: filepath.Base(filepath.Dir(b)), id: filepath.Base(b)}
			p := strings.TrimPrefix(shimAddress(b), "unix://")
			// Only a socket where shims put theirs: the file is no
			// licence to delete anything else.
			if filepath.Dir(p) == filepath.Join(hp.ContainerdRun, "s") {
				t.shimSocket = p
			}
			out = append(out, t)
		}
	}
	return out
}

// shimAddress is the address of the shim serving a task bundle: in
// bootstrap.json (containerd 2.x), else in address (1.x), else "".
func shimAddress(bundle string) string {
	if b, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var params struct {
			Address string `json:"address"`
		}
		if json.Unmarshal(b, &params) == nil {
			return params.Address
		}
	}
	a, _ := os.ReadFile(filepath.Join(bundle, "address"))
	return strings.TrimSpace(string(a))
}

// hostSteps remove what the stopped nodes left in the machine-wide paths.
func hostSteps(tasks []task, stateDirs []string) []Step {
	return hostStepsIn(tasks, stateDirs, defaultHostPaths)
}

func hostStepsIn(tasks []task, stateDirs []string, hp hostPaths) []Step {
	return []Step{
		{Name: "shim sockets and runc state under " + hp.ContainerdRun, Run: func() error {
			var errs []error
			for _, t := range tasks {
				if t.shimSocket != "" {
					errs = append(errs, removeFile(t.shimSocket))
				}
				if t.namespace != "" && t.id != "" {
					errs = append(errs, os.RemoveAll(filepath.Join(hp.ContainerdRun, "runc", t.namespace, t.id)))
					removeEmpty(filepath.Join(hp.ContainerdRun, "runc", t.namespace))
				}
			}
			removeEmpty(filepath.Join(hp.ContainerdRun, "runc"))
			removeEmpty(filepath.Join(hp.ContainerdRun, "s"))
			removeEmpty(hp.ContainerdRun)
			return errors.Join(errs...)
		}},
		{Name: "the kubelet's device plugin socket under " + hp.KubeletDir, Run: func() error {
			dir := filepath.Join(hp.KubeletDir, "device-plugins")
			sock := filepath.Join(dir, "kubelet.sock")
			// Another node's kubelet on this machine still serves there.
			if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
				c.Close()
				return nil
			}
			err := errors.Join(removeFile(sock), removeFile(filepath.Join(dir, "kubelet_internal_checkpoint")))
			removeEmpty(dir)
			removeEmpty(hp.KubeletDir)
			return err
		}},
		{Name: "container log links in " + hp.ContainerLogs, Run: func() error {
			links, _ := os.ReadDir(hp.ContainerLogs)
			var errs []error
			for _, l := range links {
				p := filepath.Join(hp.ContainerLogs, l.Name())
				target, err := os.Readlink(p)
				if err != nil || !under(target, stateDirs) {
					continue
				}
				errs = append(errs, removeFile(p))
			}
			removeEmpty(hp.ContainerLogs)
			return errors.Join(errs...)
		}},
	}
}

func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(filepath.Clean(p), filepath.Clean(d)+"/") {
			return true
		}
	}
	return false
}

func removeFile(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// removeEmpty removes dir if it is empty. A directory something else still
// uses (files in it, or a mount on it) stays.
func removeEmpty(dir string) { syscall.Rmdir(dir) }

// HostLeftovers removes what stopped nodes, whose containerds kept their
// state in runtimeDirs, left in the machine-wide paths: their shims'
// sockets and runc state under /run/containerd, the kubelet's device plugin
// socket (unless a kubelet still serves it), and container log links into
// stateDirs. Test clusters call it for each node they tear down.
func HostLeftovers(runtimeDirs, stateDirs []string) error {
	var errs []error
	for _, s := range hostSteps(containerdTasks(runtimeDirs), stateDirs) {
		if err := s.Run(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}
