package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
)

// command runs name in namespace ns (network only: the mount namespace and
// so the cgroup and bpf filesystems stay the host's, unlike `ip netns exec`).
// When cgroupDir is set the process starts inside that cgroup2 directory.
func command(ns namespace, cgroupDir string, name string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if cgroupDir != "" {
		fd, err := syscall.Open(cgroupDir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open cgroup %s: %w", cgroupDir, err)
		}
		// The fd must outlive Start; the process owns the cgroup after that.
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = fd
	}
	return cmd, nil
}

// output runs a command in ns and returns its combined output.
func output(ns namespace, cgroupDir string, name string, args ...string) (string, error) {
	cmd, err := command(ns, cgroupDir, name, args...)
	if err != nil {
		return "", err
	}
	defer closeCgroupFD(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s (in %s): %w\n%s", name, strings.Join(args, " "), ns, err, out)
	}
	return string(out), nil
}

func closeCgroupFD(cmd *exec.Cmd) {
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.UseCgroupFD {
		syscall.Close(cmd.SysProcAttr.CgroupFD)
	}
}

// dialer returns a DialContext that opens sockets inside ns, so the test
// process reaches servers that only listen there (the API server on the
// infra namespace's loopback, say).
func dialer(ns namespace) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialerIn(ns.Path())
}

// DialerIn returns a DialContext whose sockets are opened inside the network
// namespace mounted at nsPath (a node's, or the client namespace outside the
// cluster), for HTTP clients in other test packages.
func DialerIn(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// Switch this goroutine's thread into ns and back. The thread must
			// survive: a process started with Pdeathsig from it would be killed
			// if it exited. Only if switching back fails is it left to die.
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer orig.Close()
			target, err := netns.GetFromPath(nsPath)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer target.Close()
			if err := netns.Set(target); err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// commandContext runs a command in ns until it ends or ctx is done (then
// its process group is killed) and returns its combined output.
func commandContext(ctx context.Context, ns namespace, name string, args ...string) (string, error) {
	cmd, err := command(ns, "", name, args...)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return out.String(), ctx.Err()
	}
}
