package routes

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Table is the nftables table (family ip) holding Skiff's masquerade rule.
const Table = "skiff_podnet"

// Masquerade keeps the rule that rewrites the source of pod traffic
// leaving the cluster to the node's address: packets from the cluster
// range to anything outside it and not to a node. Pod-to-pod and
// pod-to-node traffic keeps the pod's address, as the Kubernetes network
// model requires. It drives the nft command, replacing the whole table in
// one transaction, so there is never a moment without the rule.
type Masquerade struct {
	netns ns.NetNS
	nft   string
}

// NewMasquerade prepares to program the calling thread's network namespace.
func NewMasquerade() (*Masquerade, error) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("masquerading pod traffic needs the nft command: install nftables (apt-get install nftables)")
	}
	cur, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("open the current network namespace: %w", err)
	}
	return &Masquerade{netns: cur, nft: nft}, nil
}

// Close releases the namespace handle; the rule stays.
func (m *Masquerade) Close() { m.netns.Close() }

// Ruleset is the nft script Apply loads.
func Ruleset(clusterCIDR netip.Prefix, nodeIPs []netip.Addr) string {
	var b strings.Builder
	// "add" then "delete" makes the delete succeed whether or not the
	// table exists; the whole script is one transaction.
	fmt.Fprintf(&b, "add table ip %s\ndelete table ip %s\ntable ip %s {\n", Table, Table, Table)
	b.WriteString("\tset nodes {\n\t\ttype ipv4_addr\n")
	var v4 []string
	for _, ip := range nodeIPs {
		if ip.Is4() {
			v4 = append(v4, ip.String())
		}
	}
	if len(v4) > 0 {
		fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(v4, ", "))
	}
	b.WriteString("\t}\n")
	b.WriteString("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
	fmt.Fprintf(&b, "\t\tip saddr %s ip daddr != %s ip daddr != @nodes masquerade fully-random\n", clusterCIDR.Masked(), clusterCIDR.Masked())
	b.WriteString("\t}\n}\n")
	return b.String()
}

// Apply loads the rule for clusterCIDR, exempting nodeIPs.
func (m *Masquerade) Apply(clusterCIDR netip.Prefix, nodeIPs []netip.Addr) error {
	if !clusterCIDR.IsValid() || !clusterCIDR.Addr().Is4() {
		return fmt.Errorf("masquerade: cluster CIDR %s: want an IPv4 range", clusterCIDR)
	}
	return m.run(Ruleset(clusterCIDR, nodeIPs))
}

// Remove deletes the table.
func (m *Masquerade) Remove() error {
	return m.run(fmt.Sprintf("add table ip %s\ndelete table ip %s\n", Table, Table))
}

func (m *Masquerade) run(script string) error {
	return m.netns.Do(func(ns.NetNS) error {
		cmd := exec.Command(m.nft, "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(out.String()))
		}
		return nil
	})
}
