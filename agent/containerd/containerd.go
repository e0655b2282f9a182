// Package containerd runs the node's own containerd when no CRI runtime
// answers: Debian's containerd and runc, with a generated configuration
// whose state, socket, CNI directories and sandbox image are the node's.
package containerd

import (
	"context"
	"errors"
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
	Dir          string // root, state, socket and config live under it
	CNIBinDir    string
	CNIConfDir   string
	SandboxImage string
	// InsecureRegistries (HOST:PORT) are pulled from over plain HTTP, like
	// a loopback or test registry.
	InsecureRegistries []string
	Logger             *slog.Logger
}

// Socket is the CRI endpoint path of the node's containerd.
func (c Config) Socket() string { return filepath.Join(c.Dir, "containerd.sock") }

var configTemplate = template.Must(template.New("config").Parse(`version = 2
root = "{{.Dir}}/root"
state = "{{.Dir}}/state"
oom_score = -999

[grpc]
  address = "{{.Socket}}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.SandboxImage}}"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state is the node's too (the default is /run/containerd/runc,
        # shared by every containerd on the machine), so it goes with the node.
        Root = "{{.Dir}}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{.CNIBinDir}}"
    conf_dir = "{{.CNIConfDir}}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{{.Dir}}/certs.d"
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
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return errors.New("containerd is not installed: install it (apt-get install containerd runc) or pass --container-runtime-endpoint")
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
		err := run(ctx, bin, cfgPath, c, func() {
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

func run(ctx context.Context, bin, cfgPath string, c Config, onReady func()) error {
	logf, err := os.OpenFile(filepath.Join(c.Dir, "containerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	os.Remove(c.Socket())
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
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
