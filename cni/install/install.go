// Package install puts skiff-cni where the node's container runtime looks
// for CNI plugins and writes its network configuration, the way a CNI
// DaemonSet's install step does: binaries are copied under a temporary name
// and renamed into place, so a runtime never executes a half-written file,
// and configurations other than Skiff's are removed, so the runtime (which
// takes the first file in name order) uses Skiff's.
package install

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/skiffnet/skiff/cni/plugin"
)

// ConfName is the file Install writes in the CNI configuration directory.
const ConfName = "10-skiff.conflist"

// NetworkName is the network's name in the conflist.
const NetworkName = "skiff"

// Config says what to install.
type Config struct {
	// PodCIDR is the node's pod range. When unset, PodCIDRFile must name
	// the file the agent writes it to (see WritePodCIDR) once known.
	PodCIDR     netip.Prefix
	PodCIDRFile string
	// DataDir holds the plugin's IPAM state (default /var/lib/cni/skiff).
	// Give each simulated node its own.
	DataDir string
	// MTU of pod interfaces; 0 lets the plugin take the MTU of the node's
	// default-route link. With a VXLAN overlay pass the link MTU minus the
	// encapsulation (routes.PodMTU does this).
	MTU int
	// Binary is the skiff-cni executable to install. Default: skiff-cni
	// next to the running executable, else the running executable when it
	// is itself named skiff-cni.
	Binary string
	// NoLoopback skips installing skiff-cni as the "loopback" plugin too.
	// containerd's CRI runs the loopback plugin for every sandbox, so leave
	// it false unless the bin directory already has one.
	NoLoopback bool
	// PortMap is the CNI portmap plugin (FindPortMap finds it). When set,
	// Install copies it into the bin directory and chains it after
	// skiff-cni, which is how pods' hostPorts are served; empty, hostPorts
	// are not served.
	PortMap string

	portMap11 bool // the portmap plugin speaks CNI 1.1.0
}

// Install copies the plugin into binDir and writes its conflist into
// confDir, removing other configurations there. Both directories are
// created when missing. It is safe to call on every agent start.
func Install(binDir, confDir string, c Config) error {
	if !c.PodCIDR.IsValid() && c.PodCIDRFile == "" {
		return errors.New("install CNI: set the pod range (PodCIDR) or the file the agent writes it to (PodCIDRFile)")
	}
	if c.PodCIDR.IsValid() && !c.PodCIDR.Addr().Is4() {
		return fmt.Errorf("install CNI: pod range %s: only IPv4 is supported", c.PodCIDR)
	}
	bin, err := c.binary()
	if err != nil {
		return err
	}
	for _, d := range []string{binDir, confDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("install CNI: %w", err)
		}
	}
	dst := filepath.Join(binDir, plugin.Type)
	if err := copyBinary(bin, dst); err != nil {
		return err
	}
	if !c.NoLoopback {
		if err := replaceWithLink(dst, filepath.Join(binDir, plugin.LoopbackType)); err != nil {
			return err
		}
	}
	if c.PortMap != "" {
		if err := installPortMap(binDir, &c); err != nil {
			return err
		}
	}
	conf, err := Conflist(c)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(confDir, ConfName), conf, 0o644); err != nil {
		return err
	}
	return removeStale(confDir)
}

// Conflist is the network configuration list Install writes. Its
// cniVersion is 1.0.0, the newest containerd 1.6's CNI library accepts;
// cniVersions adds 1.1.0, which newer runtimes pick (for GC and STATUS).
func Conflist(c Config) ([]byte, error) {
	p := map[string]any{"type": plugin.Type}
	if c.PodCIDR.IsValid() {
		p["podCIDR"] = c.PodCIDR.Masked().String()
	} else {
		p["podCIDRFile"] = c.PodCIDRFile
	}
	if c.DataDir != "" {
		p["dataDir"] = c.DataDir
	}
	if c.MTU != 0 {
		p["mtu"] = c.MTU
	}
	plugins, versions := []any{p}, []string{"1.0.0", "1.1.0"}
	if c.PortMap != "" {
		plugins = append(plugins, portMapConf())
		if !c.portMap11 {
			versions = versions[:1]
		}
	}
	b, err := json.MarshalIndent(map[string]any{
		"cniVersion":  "1.0.0",
		"cniVersions": versions,
		"name":        NetworkName,
		"plugins":     plugins,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode conflist: %w", err)
	}
	return append(b, '\n'), nil
}

// WritePodCIDR atomically writes the pod range to the file a conflist's
// podCIDRFile names.
func WritePodCIDR(path string, cidr netip.Prefix) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write pod range: %w", err)
	}
	return writeAtomic(path, []byte(cidr.Masked().String()+"\n"), 0o644)
}

// Remove undoes Install: Skiff's conflist and binaries. The nat rules of
// pods that got no CNI DEL go with RemovePortMapRules.
func Remove(binDir, confDir string) error {
	var errs []error
	for _, p := range []string{filepath.Join(confDir, ConfName), filepath.Join(binDir, plugin.Type), filepath.Join(binDir, plugin.LoopbackType), filepath.Join(binDir, PortMapType)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c Config) binary() (string, error) {
	if c.Binary != "" {
		if _, err := os.Stat(c.Binary); err != nil {
			return "", fmt.Errorf("install CNI: plugin binary: %w", err)
		}
		return c.Binary, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("install CNI: find the running executable: %w", err)
	}
	next := filepath.Join(filepath.Dir(self), plugin.Type)
	if _, err := os.Stat(next); err == nil {
		return next, nil
	}
	if filepath.Base(self) == plugin.Type {
		return self, nil
	}
	return "", fmt.Errorf("install CNI: no %s next to %s: build it (make build puts it in _output/) or pass its path", plugin.Type, self)
}

// copyBinary installs src at dst unless dst already has the same bytes.
func copyBinary(src, dst string) error {
	want, err := fileHash(src)
	if err != nil {
		return fmt.Errorf("install CNI: read %s: %w", src, err)
	}
	if have, err := fileHash(dst); err == nil && bytes.Equal(have, want) {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install CNI: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return fmt.Errorf("install CNI: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, cerr := io.Copy(tmp, in)
	if err := errors.Join(cerr, tmp.Chmod(0o755), tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("install CNI: copy %s: %w", src, err)
	}
	// rename, not an in-place write: a runtime may be executing dst.
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install CNI: %w", err)
	}
	return nil
}

// replaceWithLink makes dst a hard link to src, atomically.
func replaceWithLink(src, dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".link")
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		// A bin dir on another filesystem than the source is fine here:
		// src is in the same directory. Fall back to a copy anyway.
		return copyBinary(src, dst)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install CNI: %w", err)
	}
	return nil
}

func fileHash(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Chmod(mode), tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// removeStale deletes every network configuration in dir but Skiff's.
func removeStale(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || name == ConfName {
			continue
		}
		switch filepath.Ext(name) {
		case ".conf", ".conflist", ".json":
		default:
			continue
		}
		if strings.HasPrefix(name, ".") {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove stale CNI configuration: %w", err))
		}
	}
	return errors.Join(errs...)
}
