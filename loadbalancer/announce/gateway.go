package announce

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffnet/skiff/ingress/routes"
)

// GatewayAddresses returns the addresses the allocator gave Gateways of
// the classes Skiff serves (routes.AddressAnnotation), except the nodes'
// own. Every node is eligible for them: every node runs the proxy, and
// every node makes them local (ingress LocalAddresses), so whichever node
// answers ARP accepts the traffic.
func GatewayAddresses(classes []*gatewayv1.GatewayClass, gws []*gatewayv1.Gateway, nodeAddrs map[netip.Addr]bool) []netip.Addr {
	ours := map[string]bool{}
	for _, c := range classes {
		ours[c.Name] = c.Spec.ControllerName == routes.GatewayController
	}
	var out []netip.Addr
	for _, g := range gws {
		if !ours[string(g.Spec.GatewayClassName)] || g.DeletionTimestamp != nil {
			continue
		}
		a, err := netip.ParseAddr(g.Annotations[routes.AddressAnnotation])
		if err != nil || !a.Is4() || nodeAddrs[a] {
			continue
		}
		out = append(out, a)
	}
	return out
}

// arpIgnore is the kernel's per-interface switch; 1 answers ARP only for
// addresses configured on the interface the request came in on.
func arpIgnore(iface string) string {
	return filepath.Join("/proc/sys/net/ipv4/conf", iface, "arp_ignore")
}

// QuietKernel stops the kernel from answering ARP on iface for addresses
// that are local only through a route: every node makes the Gateway
// addresses local (so any node's proxy accepts them), and with the
// default arp_ignore 0 every node's kernel would answer ARP for them, not
// only the Lease holder. With 1, the kernel still answers for the
// addresses on iface (the node's own). The value found is saved in
// saveFile, once, for RestoreKernel.
func QuietKernel(iface, saveFile string) error {
	path := arpIgnore(iface)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	was := strings.TrimSpace(string(b))
	if was != "0" {
		return nil // 1 or stricter already: nothing to change or restore
	}
	if _, err := os.Stat(saveFile); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(saveFile), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(saveFile, []byte(iface+" "+was+"\n"), 0o644); err != nil {
			return fmt.Errorf("save %s: %w", path, err)
		}
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("set %s to 1: %w", path, err)
	}
	return nil
}

// RestoreKernel puts back the arp_ignore QuietKernel saved in saveFile
// (`skiff uninstall`); no file means nothing was changed.
func RestoreKernel(saveFile string) error {
	b, err := os.ReadFile(saveFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return fmt.Errorf("%s: want \"INTERFACE VALUE\", got %q", saveFile, b)
	}
	if err := os.WriteFile(arpIgnore(f[0]), []byte(f[1]), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("restore %s: %w", arpIgnore(f[0]), err)
	}
	return os.Remove(saveFile)
}
