// Package cgroups prepares the cgroup subtree a node's kubelet puts its pods
// in. Each Skiff node has its own subtree, so several simulated nodes can
// share one kernel, and the node's BPF programs attach to its cgroup2 part.
package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Hierarchy is one mounted cgroup hierarchy.
type Hierarchy struct {
	Mount string
	V2    bool
	Names []string // v1 controllers (or name=...) of the hierarchy
}

// Mounted lists the cgroup hierarchies of this mount namespace.
func Mounted() ([]Hierarchy, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var hs []Hierarchy
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 3 {
			continue
		}
		switch tail[0] {
		case "cgroup2":
			hs = append(hs, Hierarchy{Mount: fields[4], V2: true})
		case "cgroup":
			var names []string
			for _, o := range strings.Split(tail[2], ",") {
				if o != "rw" && o != "ro" && !strings.HasPrefix(o, "relatime") {
					names = append(names, o)
				}
			}
			hs = append(hs, Hierarchy{Mount: fields[4], Names: names})
		}
	}
	return hs, sc.Err()
}

// EnsureRoot creates cgroup root (e.g. "/skiff-node1") in every hierarchy;
// the kubelet refuses a --cgroup-root that does not exist.
func EnsureRoot(root string) error {
	hs, err := Mounted()
	if err != nil {
		return fmt.Errorf("read cgroup mounts: %w", err)
	}
	if len(hs) == 0 {
		return errors.New("no cgroup filesystem is mounted: mount cgroup2 at /sys/fs/cgroup")
	}
	for _, h := range hs {
		dir := filepath.Join(h.Mount, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if hasName(h.Names, "cpuset") {
			// A v1 cpuset group takes no tasks until it has cpus and mems.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := inherit(h.Mount, dir, f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Unified returns the cgroup2 directory of root, where the node's cgroup
// BPF programs attach, or "" when no cgroup2 hierarchy is mounted.
func Unified(root string) string {
	hs, err := Mounted()
	if err != nil {
		return ""
	}
	for _, h := range hs {
		if h.V2 {
			return filepath.Join(h.Mount, root)
		}
	}
	return ""
}

// Join moves process pid into root in every hierarchy, so that everything
// it starts (containerd, its shims, the pods) stays inside the node.
func Join(root string, pid int) error {
	hs, err := Mounted()
	if err != nil {
		return err
	}
	for _, h := range hs {
		procs := filepath.Join(h.Mount, root, "cgroup.procs")
		if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("join %s: %w", procs, err)
		}
	}
	return nil
}

// RemoveRoot removes root's now-empty groups, deepest first, in every hierarchy.
func RemoveRoot(root string) error {
	hs, err := Mounted()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		var dirs []string
		filepath.WalkDir(filepath.Join(h.Mount, root), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func hasName(names []string, n string) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

func inherit(mount, dir, file string) error {
	cur, _ := os.ReadFile(filepath.Join(dir, file))
	if strings.TrimSpace(string(cur)) != "" {
		return nil
	}
	val, err := os.ReadFile(filepath.Join(mount, file))
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), val, 0o644); err != nil {
		return fmt.Errorf("set %s of %s: %w", file, dir, err)
	}
	return nil
}
