package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// hostPort (a container port's hostPort, with its hostIP and protocol) is
// served by the reference CNI `portmap` plugin chained after skiff-cni:
// containerd's CRI passes the pod's port mappings to plugins that declare
// the portMappings capability, and portmap turns each into DNAT rules in
// the node's nat table. docs/cni.md says why this and not the eBPF load
// balancer.

// PortMapType is the plugin type (and file name) of the portmap plugin.
const PortMapType = "portmap"

// PortMapPaths are where distributions put the portmap plugin: Debian and
// Ubuntu's containernetworking-plugins, the upstream release tarball, and
// Fedora's.
var PortMapPaths = []string{"/usr/lib/cni/portmap", "/opt/cni/bin/portmap", "/usr/libexec/cni/portmap"}

// FindPortMap returns the first portmap plugin in PortMapPaths.
func FindPortMap() (string, error) {
	for _, p := range PortMapPaths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("no CNI portmap plugin in %s: install containernetworking-plugins (Debian, Ubuntu) or the upstream CNI plugins, or pods with a hostPort get no port on the node", strings.Join(PortMapPaths, ", "))
}

// portMapVersions asks the plugin which CNI versions it speaks. The
// conflist offers 1.1.0 only when it does: a runtime that reads
// cniVersions hands every plugin in the list the newest version offered,
// and Debian 12's portmap (1.1.1) stops at 1.0.0.
func portMapVersions(path string) ([]string, error) {
	cmd := exec.Command(path)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("install CNI: ask %s for its CNI versions: %w", path, err)
	}
	var v struct {
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("install CNI: %s VERSION answered %q: %w", path, out, err)
	}
	return v.SupportedVersions, nil
}

// installPortMap copies the portmap plugin into binDir and records which
// versions it speaks for the conflist.
func installPortMap(binDir string, c *Config) error {
	vers, err := portMapVersions(c.PortMap)
	if err != nil {
		return err
	}
	if !slices.Contains(vers, "1.0.0") {
		return fmt.Errorf("install CNI: %s speaks CNI %v, not 1.0.0: install containernetworking-plugins 1.0 or newer", c.PortMap, vers)
	}
	c.portMap11 = slices.Contains(vers, "1.1.0")
	// A copy, not a link: the node keeps the plugin it was configured
	// with while the package is upgraded under it.
	return copyBinary(c.PortMap, filepath.Join(binDir, PortMapType))
}

// portMapConf chains portmap after skiff-cni. snat masquerades connections
// from the node's own loopback to a hostPort (portmap then also sets
// route_localnet on the pod's host veth), which is what makes a hostPort
// with hostIP 127.0.0.1 reachable.
func portMapConf() map[string]any {
	return map[string]any{"type": PortMapType, "capabilities": map[string]bool{"portMappings": true}, "snat": true}
}

// The nat-table chains portmap creates. The three HOSTPORT chains are
// shared by every network on the machine that uses portmap; each pod gets a
// CNI-DN-<hash> chain, jumped to from CNI-HOSTPORT-DNAT by a rule whose
// comment names the network and the container.
const (
	dnatChain    = "CNI-HOSTPORT-DNAT"
	masqChain    = "CNI-HOSTPORT-MASQ"
	setMarkChain = "CNI-HOSTPORT-SETMARK"
)

// RemovePortMapRules removes the nat rules portmap made for pods of the
// network named network in the calling thread's network namespace (pods
// killed without a CNI DEL leave them), and portmap's shared chains once
// no network uses them. Rules of other networks (podman's, say) stay. It
// does nothing where iptables is not installed.
func RemovePortMapRules(network string) error {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return nil
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(ipt, append([]string{"-w", "-t", "nat"}, args...)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("iptables -t nat %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return string(out), nil
	}
	rules, err := run("-S", dnatChain)
	if err != nil {
		return nil // no such chain: portmap never ran here
	}
	ours := `name: \"` + network + `\" `
	var errs []error
	lines := ruleLines(rules, dnatChain)
	left := len(lines)
	for i := len(lines) - 1; i >= 0; i-- { // highest first: numbers shift on delete
		if !strings.Contains(lines[i], ours) {
			continue
		}
		if _, err := run("-D", dnatChain, strconv.Itoa(i+1)); err != nil {
			errs = append(errs, err)
			continue
		}
		left--
		if target := jumpTarget(lines[i]); strings.HasPrefix(target, "CNI-DN-") {
			errs = append(errs, removeChain(run, target))
		}
	}
	if left > 0 || len(errs) > 0 {
		return errors.Join(errs...)
	}
	for builtin, target := range map[string]string{"PREROUTING": dnatChain, "OUTPUT": dnatChain, "POSTROUTING": masqChain} {
		errs = append(errs, removeJumps(run, builtin, target))
	}
	for _, chain := range []string{dnatChain, masqChain, setMarkChain} {
		errs = append(errs, removeChain(run, chain))
	}
	return errors.Join(errs...)
}

// ruleLines are the "-A CHAIN ..." lines of `iptables -S CHAIN`, in rule
// number order.
func ruleLines(out, chain string) []string {
	var rules []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A "+chain+" ") {
			rules = append(rules, l)
		}
	}
	return rules
}

func jumpTarget(rule string) string {
	f := strings.Fields(rule)
	if i := slices.Index(f, "-j"); i >= 0 && i+1 < len(f) {
		return f[i+1]
	}
	return ""
}

func removeJumps(run func(...string) (string, error), builtin, target string) error {
	out, err := run("-S", builtin)
	if err != nil {
		return err
	}
	lines := ruleLines(out, builtin)
	var errs []error
	for i := len(lines) - 1; i >= 0; i-- {
		if jumpTarget(lines[i]) == target {
			_, err := run("-D", builtin, strconv.Itoa(i+1))
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeChain(run func(...string) (string, error), chain string) error {
	if _, err := run("-S", chain); err != nil {
		return nil // already gone
	}
	if _, err := run("-F", chain); err != nil {
		return err
	}
	_, err := run("-X", chain)
	return err
}
