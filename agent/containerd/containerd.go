// Package containerd runs the node's own containerd when no CRI runtime
// answers: the containerd 2.x and runc Skiff ships (built by make build
// from the Go modules under build/, see docs/containerd.md), with a
// generated configuration whose state, sockets, CNI directories and
// sandbox image are the node's.
package containerd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// Config places one node's containerd.
type Config struct {
	Dir          string // root, state, sockets and config live under it
	CNIBinDir    string
	CNIConfDir   string
	SandboxImage string
	// InsecureRegistries (HOST:PORT) are pulled from over plain HTTP, like
	// a loopback or test registry.
	InsecureRegistries []string
	// Binaries are the programs to run (FindBinaries); Supervise fills
	// them in when Containerd is empty.
	Binaries Binaries
	Logger   *slog.Logger
}

// Socket is the CRI endpoint path of the node's containerd.
func (c Config) Socket() string { return filepath.Join(c.Dir, "containerd.sock") }

// maxShimSocketDir is the longest socket_dir containerd accepts (the shims'
// sockets, named by a 64-character hash, must fit a unix socket path).
const maxShimSocketDir = 42

// ShimSocketDir is where the node's shims listen: under its own directory
// when the path is short enough, else "" (containerd's machine-wide
// /run/containerd/s, which test clusters' long temporary paths need).
func (c Config) ShimSocketDir() string {
	if d := filepath.Join(c.Dir, "s"); len(d) <= maxShimSocketDir {
		return d
	}
	return ""
}

// The configuration is version 3, the format of containerd 2.x (2.4 still
// reads it and migrates it in memory). Everything a containerd would
// otherwise share with others on the machine (sockets, runc's state, the
// NRI socket) is placed under the node's directory, so that test clusters
// run several nodes on one kernel and uninstall removes one directory.
var configTemplate = template.Must(template.New("config").Parse(`version = 3
root = "{{.Dir}}/root"
state = "{{.Dir}}/state"
oom_score = -999

[grpc]
  address = "{{.Socket}}"

[ttrpc]
  address = "{{.Socket}}.ttrpc"

[plugins]
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "{{.SandboxImage}}"
    [plugins."io.containerd.cri.v1.images".registry]
      config_path = "{{.Dir}}/certs.d"

  [plugins."io.containerd.cri.v1.runtime"]
    enable_selinux = false
    disable_apparmor = true
    restrict_oom_score_adj = true
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          # The kubelet's cgroup driver is cgroupfs (agent/kubelet).
          SystemdCgroup = false
          # runc's state is the node's too (the default is /run/containerd/runc,
          # shared by every containerd on the machine), so it goes with the node.
          Root = "{{.Dir}}/runc"
          # The runc shipped with this containerd, not whichever is on PATH.
          BinaryName = "{{.Binaries.Runc}}"
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["{{.CNIBinDir}}"]
      conf_dir = "{{.CNIConfDir}}"
      max_conf_num = 1

  [plugins."io.containerd.nri.v1.nri"]
    # NRI is on by default in 2.x and listens at /var/run/nri/nri.sock,
    # which another node's containerd on the machine would take.
    socket_path = "{{.Dir}}/nri.sock"
{{- with .ShimSocketDir}}

  [plugins."io.containerd.shim.v1.manager"]
    socket_dir = "{{.}}"
{{- end}}
`))

// Render is the containerd configuration file's text.
func (c Config) Render() ([]byte, error) {
	var b strings.Builder
	if err := configTemplate.Execute(&b, c); err != nil {
		return nil, fmt.Errorf("render containerd config: %w", err)
	}
	return []byte(b.String()), nil
}

// Answers reports whether something accepts connections on a unix socket.
func Answers(socket string) bool {
	conn, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// Supervise runs containerd until ctx is done, restarting it with back-off
// when it dies. ready is closed once the socket first answers.
func Supervise(ctx context.Context, c Config, ready chan<- struct{}) error {
	if c.Binaries.Containerd == "" {
		b, err := FindBinaries(ctx)
		if err != nil {
			return err
		}
		c.Binaries = b
	}
	if _, version, err := Version(ctx, c.Binaries.Containerd); err == nil {
		c.Logger.Info("containerd", "version", version, "path", c.Binaries.Containerd, "runc", c.Binaries.Runc)
	}
	for _, d := range []string{c.Dir, c.CNIBinDir, c.CNIConfDir, filepath.Join(c.Dir, "certs.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	text, err := c.Render()
	if err != nil {
		return err
	}
	if err := c.writeRegistryHosts(); err != nil {
		return err
	}
	cfgPath := filepath.Join(c.Dir, "config.toml")
	if err := os.WriteFile(cfgPath, text, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", cfgPath, err)
	}
	backoff := time.Second
	signalled := false
	for {
		start := time.Now()
		err := run(ctx, cfgPath, c, func() {
			if !signalled {
				close(ready)
				signalled = true
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		c.Logger.Warn("containerd exited; restarting", "err", err, "after", backoff)
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func run(ctx context.Context, cfgPath string, c Config, onReady func()) error {
	logf, err := os.OpenFile(filepath.Join(c.Dir, "containerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	os.Remove(c.Socket())
	cmd := exec.Command(c.Binaries.Containerd, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// containerd looks for containerd-shim-runc-v2 in its working
	// directory, then on PATH: both lead to the shim shipped with it.
	cmd.Dir = c.Binaries.Dir()
	cmd.Env = append(os.Environ(), "PATH="+c.Binaries.Dir()+string(os.PathListSeparator)+os.Getenv("PATH"))
	// Its own process group, so a terminal's Ctrl-C reaches the agent, which
	// then stops containerd; the shims it started keep the pods running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("containerd: %w (see %s)", err, logf.Name())
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			return nil
		case <-tick.C:
			if Answers(c.Socket()) {
				onReady()
				tick.Stop()
			}
		}
	}
}

// writeRegistryHosts writes certs.d/HOST/hosts.toml for each insecure
// registry, the per-registry configuration containerd's CRI reads.
func (c Config) writeRegistryHosts() error {
	for _, r := range c.InsecureRegistries {
		if strings.ContainsAny(r, "/ ") || r == "" {
			return fmt.Errorf("--insecure-registry %q: want HOST:PORT, such as 172.30.0.1:5000", r)
		}
		dir := filepath.Join(c.Dir, "certs.d", r)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n",
			"http://"+r, "http://"+r)
		if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			return fmt.Errorf("write registry config for %s: %w", r, err)
		}
	}
	return nil
}
