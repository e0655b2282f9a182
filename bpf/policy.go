package bpf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
)

// NetworkPolicy map layouts, shared with policy.c.
type (
	PolicyEndpoint   = policyPolEndpoint
	PolicyRuleKey    = policyPolRuleKey
	PolicyRule       = policyPolRule
	PolicyPortKey    = policyPolPortKey
	PolicyCTKey      = policyPolCtKey
	PolicyCTVal      = policyPolCtVal
	PolicyEPKey      = policyPolEpKey
	PolicyEPCounters = policyPolEpCounters
)

// PolicyEvent is a denied packet as the programs report it on pol_events
// (policy.c struct pol_event).
type PolicyEvent struct {
	TS           uint64
	Saddr, Daddr uint32
	Sport, Dport uint16
	Proto, Dir   uint8
	Pad          uint16
}

// Directions of policy.c (DIR_*): seen from the pod.
const (
	PolicyIngress uint8 = 0 // into the pod
	PolicyEgress  uint8 = 1 // out of the pod
)

// Flags of policy.c.
const (
	PolicyIsolateIngress uint32 = 0x1 // PolicyEndpoint.Flags
	PolicyIsolateEgress  uint32 = 0x2
	PolicyRuleAny        uint32 = 0x1 // PolicyRule.Flags: every protocol and port
)

// Prefix lengths of the LPM keys before their variable part.
const (
	PolicyRulePrefixBase = 64 // pod, direction, generation, pad
	PolicyPortPrefixBase = 48 // set id, protocol, pad
)

// PolicyStat indexes pol_stats (policy.c enum pol_stat).
type PolicyStat uint32

const (
	PolicyAllowIngress PolicyStat = iota // new flows into a pod, allowed
	PolicyAllowEgress                    // new flows out of a pod, allowed
	PolicyDropIngress                    // packets into a pod, denied
	PolicyDropEgress                     // packets out of a pod, denied
	PolicyAllowHost                      // new flows from the node into an isolated pod
	policyStatMax
)

// PolicyDir is where the policy pins live, below a node's pin directory:
// a directory of their own, so the load balancer's pin handling (which
// globs its own link names) never touches them.
const PolicyDir = "netpol"

// Policy is the NetworkPolicy data plane: the two programs for pods' host
// veths and their maps, pinned in PinDir/netpol.
type Policy struct {
	FromPod *ebpf.Program // TCX ingress of a host veth: what the pod sends
	ToPod   *ebpf.Program // TCX egress of a host veth: what the pod receives

	Endpoints *ebpf.Map // pod IP -> PolicyEndpoint
	Rules     *ebpf.Map // LPM PolicyRuleKey -> PolicyRule
	Ports     *ebpf.Map // LPM PolicyPortKey -> uint32
	CT        *ebpf.Map // PolicyCTKey -> PolicyCTVal (written by the programs)
	Stats     *ebpf.Map // per-CPU uint64 counters indexed by PolicyStat
	EPStats   *ebpf.Map // per-CPU PolicyEPKey -> PolicyEPCounters
	Events    *ebpf.Map // ring buffer of PolicyEvent

	dir  string
	objs policyObjects
}

// LoadPolicy loads the policy programs over the maps pinned in
// nodePinDir/netpol, creating and pinning them when missing, so policy
// stays enforced (and flows tracked) across agent restarts. Maps whose
// layout an upgrade changed are replaced.
func LoadPolicy(nodePinDir string) (*Policy, error) {
	dir := filepath.Join(nodePinDir, PolicyDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create policy pin directory: %w", err)
	}
	p := &Policy{dir: dir}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}
	err := loadPolicyObjects(&p.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		if err := removePolicyMaps(dir); err != nil {
			return nil, err
		}
		err = loadPolicyObjects(&p.objs, opts)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load network policy programs: %+v", ve)
		}
		return nil, fmt.Errorf("load network policy programs: %w", err)
	}
	pr, m := &p.objs.policyPrograms, &p.objs.policyMaps
	p.FromPod, p.ToPod = pr.SkiffPolicyFromPod, pr.SkiffPolicyToPod
	p.Endpoints, p.Rules, p.Ports, p.CT = m.PolEndpoints, m.PolRules, m.PolPorts, m.PolCt
	p.Stats, p.EPStats, p.Events = m.PolStats, m.PolEpStats, m.PolEvents
	return p, nil
}

// Close releases this process's handles; attached programs and pins stay.
func (p *Policy) Close() error { return p.objs.Close() }

const policyLinkPrefix = "link_"

// Attach puts both programs on each named interface (pods' host veths) of
// the calling thread's network namespace, with links pinned so they
// outlive the agent; a link pinned by an earlier run is updated in place.
// Links pinned for interfaces not listed are removed (their pods are
// gone). Interfaces that do not exist are returned, wrapped in
// ErrInterfaceMissing, after the others are attached.
func (p *Policy) Attach(ifaces []string) error {
	keep := map[string]bool{}
	var missing []string
	for _, name := range ifaces {
		dev, err := net.InterfaceByName(name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		idx := dev.Index
		for _, h := range []struct {
			hook   string
			prog   *ebpf.Program
			attach ebpf.AttachType
		}{{"from_pod", p.FromPod, ebpf.AttachTCXIngress}, {"to_pod", p.ToPod, ebpf.AttachTCXEgress}} {
			pin := filepath.Join(p.dir, policyLinkPrefix+h.hook+"_"+name)
			keep[pin] = true
			if err := attachTCX(pin, idx, h.prog, h.attach); err != nil {
				return fmt.Errorf("attach network policy program to %s: %w", name, err)
			}
		}
	}
	pins, _ := filepath.Glob(filepath.Join(p.dir, policyLinkPrefix+"*"))
	for _, pin := range pins {
		if !keep[pin] {
			os.Remove(pin) // the last reference: the kernel detaches it
		}
	}
	if missing != nil {
		return fmt.Errorf("%w: %s", ErrInterfaceMissing, strings.Join(missing, ", "))
	}
	return nil
}

// Attached lists the interfaces that have pinned policy links.
func (p *Policy) Attached() []string {
	pins, _ := filepath.Glob(filepath.Join(p.dir, policyLinkPrefix+"to_pod_*"))
	out := make([]string, 0, len(pins))
	for _, pin := range pins {
		out = append(out, strings.TrimPrefix(filepath.Base(pin), policyLinkPrefix+"to_pod_"))
	}
	return out
}

// ReadStats sums the per-CPU counters of the policy programs.
func (p *Policy) ReadStats() ([policyStatMax]uint64, error) {
	var out [policyStatMax]uint64
	for i := PolicyStat(0); i < policyStatMax; i++ {
		var per []uint64
		if err := p.Stats.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read policy stat %d: %w", i, err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// RemovePolicy detaches the policy programs from every pod and removes
// their pins: a step of `skiff uninstall` and of Remove.
func RemovePolicy(nodePinDir string) error {
	dir := filepath.Join(nodePinDir, PolicyDir)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove network policy pins: %w", err)
	}
	return nil
}

func removePolicyMaps(dir string) error {
	spec, err := loadPolicy()
	if err != nil {
		return err
	}
	var errs []error
	for name := range spec.Maps {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
