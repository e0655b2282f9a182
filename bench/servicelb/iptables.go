package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"time"
)

// loadIPTables writes the Services as kube-proxy's iptables mode would:
// KUBE-SERVICES matching each ClusterIP, a KUBE-SVC chain choosing an
// endpoint with statistic-mode probabilities, and a KUBE-SEP chain per
// endpoint doing the DNAT. The measured Service comes after all the others
// in KUBE-SERVICES (kube-proxy's order is arbitrary; this is the far end of
// the walk). It returns how long iptables-restore took.
func loadIPTables(backends []uint16) (time.Duration, error) {
	var b bytes.Buffer
	b.WriteString("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n")
	var rules bytes.Buffer
	rules.WriteString("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
	rules.WriteString("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
	rules.WriteString("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n")
	service := func(name, vip string, eps []string) {
		svc := "KUBE-SVC-" + name
		fmt.Fprintf(&b, ":%s - [0:0]\n", svc)
		fmt.Fprintf(&rules, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"bench/%s:http cluster IP\" -m tcp --dport 80 -j %s\n", vip, name, svc)
		fmt.Fprintf(&rules, "-A %s ! -s 10.244.0.0/16 -d %s/32 -p tcp -m comment --comment \"bench/%s:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\n", svc, vip, name)
		for i, ep := range eps {
			sep := fmt.Sprintf("KUBE-SEP-%s-%d", name, i)
			fmt.Fprintf(&b, ":%s - [0:0]\n", sep)
			if left := len(eps) - i; left > 1 {
				fmt.Fprintf(&rules, "-A %s -m comment --comment \"bench/%s:http -> %s\" -m statistic --mode random --probability %.11f -j %s\n", svc, name, ep, 1/float64(left), sep)
			} else {
				fmt.Fprintf(&rules, "-A %s -m comment --comment \"bench/%s:http -> %s\" -j %s\n", svc, name, ep, sep)
			}
			fmt.Fprintf(&rules, "-A %s -s %s/32 -m comment --comment \"bench/%s:http\" -j KUBE-MARK-MASQ\n", sep, netip.MustParseAddrPort(ep).Addr(), name)
			fmt.Fprintf(&rules, "-A %s -p tcp -m comment --comment \"bench/%s:http\" -m tcp -j DNAT --to-destination %s\n", sep, name, ep)
		}
	}
	for i := range *services {
		var eps []string
		for e := range *endpoints {
			eps = append(eps, podAddr(i, e).String())
		}
		service(fmt.Sprintf("S%d", i), fmt.Sprintf("10.97.%d.%d", 1+i/250, 1+i%250), eps)
	}
	var eps []string
	for _, p := range backends {
		eps = append(eps, fmt.Sprintf("%s:%d", backendIP, p))
	}
	service("MEASURED", "10.97.0.1", eps)
	b.Write(rules.Bytes())
	b.WriteString("COMMIT\n")

	start := time.Now()
	cmd := exec.Command("iptables-restore", "-w")
	cmd.Stdin = &b
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("iptables-restore: %w: %s", err, out)
	}
	return time.Since(start), nil
}
