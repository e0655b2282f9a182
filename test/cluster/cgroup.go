package cluster

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// killCgroup kills every process in a cgroup2 subtree with cgroup.kill and
// waits until the subtree is empty.
func killCgroup(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil || strings.Contains(string(b), "populated 0") {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("processes remain in " + dir)
}

// removeCgroups removes a node's cgroup directories in every hierarchy,
// deepest first.
func removeCgroups(name string) {
	mounts, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, m := range append(mounts, "/sys/fs/cgroup") {
		root := filepath.Join(m, name)
		var dirs []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
}

// cgroupPIDs lists the processes in a cgroup2 subtree (the node's: its
// containerd, the plugins it runs, shims and containers).
func cgroupPIDs(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// ProcessWithEnv is a process of the node (in its cgroup subtree) whose
// environment holds every one of env, or 0: the echo image gets
// POD_NAMESPACE and POD_NAME from the downward API, so this finds a pod's
// process, and /proc/PID/ns/net its network namespace.
func (n *Node) ProcessWithEnv(env ...string) int {
	for _, pid := range cgroupPIDs(n.CgroupDir()) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		have := strings.Split(string(b), "\x00")
		if !slices.ContainsFunc(env, func(e string) bool { return !slices.Contains(have, e) }) {
			return pid
		}
	}
	return 0
}
