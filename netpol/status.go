package netpol

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/cilium/ebpf"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/netpol/model"
)

// Status is what the controller last applied, for `skiff agent policy`:
// the kernel's maps know addresses, not pod and policy names.
type Status struct {
	Pods []PodStatus `json:"pods"`
}

// PodStatus is one local pod selected by at least one policy.
type PodStatus struct {
	Pod             string   `json:"pod"` // namespace/name
	IP              string   `json:"ip"`
	Policies        []string `json:"policies"`
	IngressIsolated bool     `json:"ingressIsolated"`
	EgressIsolated  bool     `json:"egressIsolated"`
	IngressEntries  int      `json:"ingressEntries"`
	EgressEntries   int      `json:"egressEntries"`
}

func statusOf(eps map[netip.Addr]*model.Endpoint) Status {
	var s Status
	for ip, ep := range eps {
		if !ep.IngressIsolated && !ep.EgressIsolated {
			continue
		}
		s.Pods = append(s.Pods, PodStatus{
			Pod: ep.Pod.String(), IP: ip.String(), Policies: ep.Policies,
			IngressIsolated: ep.IngressIsolated, EgressIsolated: ep.EgressIsolated,
			IngressEntries: len(ep.Ingress), EgressEntries: len(ep.Egress),
		})
	}
	slices.SortFunc(s.Pods, func(a, b PodStatus) int { return strings.Compare(a.Pod, b.Pod) })
	return s
}

// writeStatus replaces path atomically.
func writeStatus(path string, s Status) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// List prints each policed local pod of a node: its policies, isolation
// and the kernel's allow and deny counters (new flows allowed, packets
// dropped), read from the pins in nodePinDir and the controller's status.
func List(w io.Writer, nodePinDir, statusFile string) error {
	var s Status
	b, err := os.ReadFile(statusFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err == nil {
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("%s: %w", statusFile, err)
		}
	}
	stats, err := ebpf.LoadPinnedMap(filepath.Join(nodePinDir, bpf.PolicyDir, "pol_ep_stats"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open the policy counters: %w", err)
	}
	defer stats.Close()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tIP\tINGRESS\tEGRESS\tALLOWED IN\tDENIED IN\tALLOWED OUT\tDENIED OUT\tPOLICIES")
	for _, p := range s.Pods {
		ip, err := netip.ParseAddr(p.IP)
		if err != nil {
			continue
		}
		var c [2]bpf.PolicyEPCounters
		for _, dir := range []uint8{bpf.PolicyIngress, bpf.PolicyEgress} {
			var per []bpf.PolicyEPCounters
			if err := stats.Lookup(bpf.PolicyEPKey{Pod: bpf.Addr4(ip), Dir: uint32(dir)}, &per); err == nil {
				for _, v := range per {
					c[dir].Allowed += v.Allowed
					c[dir].Denied += v.Denied
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", p.Pod, p.IP,
			isolation(p.IngressIsolated, p.IngressEntries), isolation(p.EgressIsolated, p.EgressEntries),
			c[bpf.PolicyIngress].Allowed, c[bpf.PolicyIngress].Denied, c[bpf.PolicyEgress].Allowed, c[bpf.PolicyEgress].Denied,
			strings.Join(p.Policies, ","))
	}
	return tw.Flush()
}

func isolation(isolated bool, entries int) string {
	if !isolated {
		return "open"
	}
	return fmt.Sprintf("%d entries", entries)
}
