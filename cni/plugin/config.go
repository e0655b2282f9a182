package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultDataDir holds IPAM state when the configuration names none.
const DefaultDataDir = "/var/lib/cni/skiff"

// NetConf is skiff-cni's network configuration (one entry of a conflist's
// "plugins"), as cni/install writes it.
type NetConf struct {
	types.PluginConf

	// PodCIDR is the node's pod range (Node.spec.podCIDR). Either it or
	// PodCIDRFile must be set.
	PodCIDR string `json:"podCIDR,omitempty"`
	// PodCIDRFile names a file holding the pod range, written by the agent
	// once the control plane has assigned one; until then ADD asks the
	// runtime to try again later.
	PodCIDRFile string `json:"podCIDRFile,omitempty"`
	// DataDir holds IPAM state (default /var/lib/cni/skiff).
	DataDir string `json:"dataDir,omitempty"`
	// MTU of the pod interface; 0 takes the MTU of the link the node's
	// default route uses.
	MTU int `json:"mtu,omitempty"`
}

// parseConf decodes and checks a configuration; its errors carry the CNI
// spec's codes and say which field to fix.
func parseConf(stdin []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "network configuration is not valid JSON", err.Error())
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "prevResult cannot be decoded", err.Error())
		}
	}
	if c.Type == LoopbackType {
		return &c, nil
	}
	if c.PodCIDR == "" && c.PodCIDRFile == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, `network configuration sets neither "podCIDR" nor "podCIDRFile": set one to the node's pod range`, "")
	}
	if c.PodCIDR != "" {
		if _, err := parseCIDR(c.PodCIDR); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"podCIDR" %q: %v`, c.PodCIDR, err), "")
		}
	}
	if c.MTU < 0 || c.MTU > 65535 || (c.MTU != 0 && c.MTU < 576) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"mtu" %d: want 576 to 65535, or 0 for the MTU of the default route's link`, c.MTU), "")
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if !filepath.IsAbs(c.DataDir) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"dataDir" %q: want an absolute path`, c.DataDir), "")
	}
	return &c, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("want a CIDR such as 10.244.1.0/24")
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("only IPv4 pod ranges are supported")
	}
	if p.Bits() > 29 {
		return netip.Prefix{}, fmt.Errorf("want a /29 or larger")
	}
	return p.Masked(), nil
}

// podCIDR resolves the pod range: inline, or from the agent's file.
func (c *NetConf) podCIDR() (netip.Prefix, error) {
	if c.PodCIDR != "" {
		return parseCIDR(c.PodCIDR)
	}
	b, err := os.ReadFile(c.PodCIDRFile)
	if errors.Is(err, os.ErrNotExist) {
		return netip.Prefix{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("this node has no pod range yet (%s does not exist): the agent writes it once the control plane assigns Node.spec.podCIDR; check that the agent runs and the controller manager has --allocate-node-cidrs", c.PodCIDRFile), "")
	}
	if err != nil {
		return netip.Prefix{}, types.NewError(types.ErrIOFailure, fmt.Sprintf("read pod range from %s", c.PodCIDRFile), err.Error())
	}
	p, err := parseCIDR(string(b))
	if err != nil {
		return netip.Prefix{}, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("pod range file %s holds %q: %v", c.PodCIDRFile, strings.TrimSpace(string(b)), err), "")
	}
	return p, nil
}

// ipamDir is where this network's allocations live.
func (c *NetConf) ipamDir() string { return filepath.Join(c.DataDir, "networks", c.Name) }
