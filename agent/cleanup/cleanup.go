// Package cleanup removes what Skiff's agents set up on a machine: the
// processes of their nodes (containerd, shims, containers), mounts, BPF pins,
// cgroups and state, for `skiff uninstall` and `make stop`.
package cleanup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Options say what to remove.
type Options struct {
	// Nodes are the names of the nodes this machine's agents ran as: their
	// cgroup subtrees (skiff-NODE) are stopped and removed, and nothing
	// else, so other Skiff nodes sharing the kernel (test clusters) live on.
	Nodes     []string
	StateDirs []string // agent and server data dirs; mounts under them are unmounted
	KeepData  bool     // keep the data dirs (etcd, certificates) themselves
	// RuntimeDirs are the nodes' containerd directories (/run/skiff/NODE):
	// the state of processes that are gone once the nodes are stopped, so
	// they are unmounted and removed even when the data is kept.
	RuntimeDirs []string
	BPFPins     []string // e.g. /sys/fs/bpf/skiff/NODE
	Out         io.Writer
}

// Steps is a named cleanup a component contributes (routes, nftables, ...).
type Step struct {
	Name string
	Run  func() error
}

// Machine removes everything of Skiff's on this machine, running the
// components' own steps after the node processes are gone.
func Machine(opts Options, steps ...Step) error {
	var errs []error
	note := func(format string, args ...any) { fmt.Fprintf(opts.Out, format+"\n", args...) }
	for _, cg := range nodeCgroups(opts.Nodes) {
		if err := kill(cg); err != nil {
			errs = append(errs, err)
		} else {
			note("stopped the processes of %s", cg)
		}
	}
	// Read before the directories go: which shim sockets and runc state
	// under /run/containerd the nodes' containerds made.
	tasks := containerdTasks(opts.RuntimeDirs)
	for _, dir := range append(opts.RuntimeDirs, opts.StateDirs...) {
		n, err := UnmountUnder(dir)
		if err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			note("unmounted %d mounts under %s", n, dir)
		}
	}
	for _, s := range steps {
		if err := s.Run(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
		} else {
			note("removed %s", s.Name)
		}
	}
	for _, p := range opts.BPFPins {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
		removeEmpty(filepath.Dir(p)) // /sys/fs/bpf/skiff, once no node has pins
	}
	for _, dir := range opts.RuntimeDirs {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		} else {
			note("removed %s", dir)
		}
		removeEmpty(filepath.Dir(dir)) // /run/skiff, once no node runs
	}
	for _, s := range hostSteps(tasks, opts.StateDirs) {
		if err := s.Run(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
		}
	}
	removeNodeCgroups(opts.Nodes)
	if !opts.KeepData {
		for _, dir := range opts.StateDirs {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, err)
			} else {
				note("removed %s", dir)
			}
		}
	}
	return errors.Join(errs...)
}

// nodeCgroups are the cgroup2 subtrees of the given nodes.
func nodeCgroups(nodes []string) []string {
	var out []string
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		for _, n := range nodes {
			d := filepath.Join(root, "skiff-"+n)
			if _, err := os.Stat(filepath.Join(d, "cgroup.kill")); err == nil {
				out = append(out, d)
			}
		}
	}
	return out
}

func kill(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644); err != nil {
		return fmt.Errorf("kill %s: %w", dir, err)
	}
	for range 200 {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil || strings.Contains(string(b), "populated 0") {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("processes remain in %s", dir)
}

func removeNodeCgroups(names []string) {
	mounts, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, m := range append(mounts, "/sys/fs/cgroup") {
		for _, name := range names {
			n := filepath.Join(m, "skiff-"+name)
			var dirs []string
			filepath.Walk(n, func(p string, info os.FileInfo, err error) error {
				if err == nil && info.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				os.Remove(dirs[i])
			}
		}
	}
}

// UnmountUnder lazily unmounts every mount below dir, deepest first
// (volumes, overlay rootfs, netns bind mounts).
func UnmountUnder(dir string) (int, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	prefix := filepath.Clean(dir) + "/"
	var targets []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], prefix) {
			targets = append(targets, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(targets)))
	var errs []error
	for _, t := range targets {
		if err := syscall.Unmount(t, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
		}
	}
	return len(targets), errors.Join(errs...)
}
