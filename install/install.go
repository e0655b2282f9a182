package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/skiffnet/skiff/agent/containerd"
)

// Target is where units and the binary go; Root is "/" on a real machine
// and a scratch directory in tests.
type Target struct {
	Root  string
	Start bool // enable and start the unit with systemctl
	Out   io.Writer
}

func (t Target) path(p string) string { return filepath.Join(t.Root, p) }

// BinaryPath is where the skiff binary is installed.
const BinaryPath = "/usr/local/bin/skiff"

// Install copies the running binary, writes the unit (and its environment
// file), and starts it when asked.
func (t Target) Install(ctx context.Context, u Unit, env map[string]string) error {
	if err := t.copySelf(); err != nil {
		return err
	}
	if len(env) > 0 {
		u.EnvFile = "/etc/skiff/" + u.Name + ".env"
		var b strings.Builder
		for k, v := range env {
			fmt.Fprintf(&b, "%s=%s\n", k, v)
		}
		if err := write(t.path(u.EnvFile), []byte(b.String()), 0o600); err != nil {
			return err
		}
	}
	text, err := u.Render()
	if err != nil {
		return err
	}
	unitPath := t.path("/etc/systemd/system/" + u.Name + ".service")
	if err := write(unitPath, text, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(t.Out, "wrote %s\n", unitPath)
	if !t.Start {
		return nil
	}
	if !systemdRunning() {
		return fmt.Errorf("systemd is not running on this machine, so %s.service cannot be started; run `%s %s` yourself", u.Name, u.Binary, strings.Join(u.Args, " "))
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", u.Name + ".service"}} {
		if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	fmt.Fprintf(t.Out, "started %s.service (logs: journalctl -u %s)\n", u.Name, u.Name)
	return nil
}

// Remove stops and deletes a unit and its environment file.
func (t Target) Remove(ctx context.Context, name string) error {
	unitPath := t.path("/etc/systemd/system/" + name + ".service")
	if _, err := os.Stat(unitPath); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if t.Start && systemdRunning() {
		exec.CommandContext(ctx, "systemctl", "disable", "--now", name+".service").Run()
	}
	for _, p := range []string{unitPath, t.path("/etc/skiff/" + name + ".env")} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	fmt.Fprintf(t.Out, "removed %s\n", unitPath)
	return nil
}

func (t Target) copySelf() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dst := t.path(BinaryPath)
	if same, _ := filepath.EvalSymlinks(self); same == dst {
		return nil
	}
	data, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	if err := write(dst, data, 0o755); err != nil {
		return err
	}
	// The CNI plugin is a small binary of its own, next to skiff.
	cni := filepath.Join(filepath.Dir(self), "skiff-cni")
	data, err = os.ReadFile(cni)
	if err != nil {
		return fmt.Errorf("the CNI plugin %s: %w (make build puts it next to skiff)", cni, err)
	}
	if err := write(filepath.Join(filepath.Dir(dst), "skiff-cni"), data, 0o755); err != nil {
		return err
	}
	if err := copyRuntime(filepath.Dir(self), filepath.Dir(dst)); err != nil {
		return err
	}
	return t.copyImages(filepath.Join(filepath.Dir(self), "images"))
}

// copyRuntime installs the containerd and runc Skiff ships, which the
// agent looks for in their directory next to skiff.
func copyRuntime(from, to string) error {
	src := filepath.Join(from, containerd.BundleDir)
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("containerd and runc in %s: %w (make build puts them next to skiff)", src, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") { // .stamp is the build's
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := write(filepath.Join(to, containerd.BundleDir, e.Name()), data, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// ImageDir is where installed image archives go; the agent imports them.
const ImageDir = "/var/lib/skiff/images"

// copyImages installs the image archives built next to the binary (the
// pod sandbox image among them).
func (t Target) copyImages(dir string) error {
	files, _ := filepath.Glob(filepath.Join(dir, "*.tar"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := write(t.path(filepath.Join(ImageDir, filepath.Base(f))), data, 0o644); err != nil {
			return err
		}
	}
	if len(files) > 0 {
		fmt.Fprintf(t.Out, "installed %d images in %s\n", len(files), t.path(ImageDir))
	}
	return nil
}

func write(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// systemdRunning reports whether PID 1 is systemd (sd_booted's test).
func systemdRunning() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}
