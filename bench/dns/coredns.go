package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/skiffnet/skiff/bench/skiffserver"
)

// corefile is one CoreDNS configuration under test. Both serve the same
// cluster through the `kubernetes` plugin with the benchmark server's admin
// kubeconfig and TTL 30 (Skiff's), bound to one loopback port.
type corefile struct {
	name string
	// text has PORT, KUBECONFIG and, for side listeners, HEALTH, READY and
	// METRICS replaced by free loopback addresses.
	text string
}

// corefiles:
//   - "cached": the `kubernetes` plugin with `cache 30` in front of it,
//     CoreDNS's fastest setup for cluster names (repeated questions never
//     reach the plugin).
//   - "kubeadm": the Corefile kubeadm v1.37 installs
//     (cmd/kubeadm/app/phases/addons/dns/manifests.go), side listeners moved
//     to loopback. It disables the cache for the cluster domain ("disable
//     success/denial cluster.local"), so every cluster name is answered by
//     the plugin, and adds errors, health, ready, prometheus, forward,
//     loop, reload and loadbalance.
var corefiles = []corefile{
	{name: "coredns-cached", text: `.:PORT {
    bind 127.0.0.1
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       kubeconfig KUBECONFIG
       ttl 30
    }
    cache 30
}
`},
	{name: "coredns-kubeadm", text: `.:PORT {
    bind 127.0.0.1
    errors
    health HEALTH {
       lameduck 5s
    }
    ready READY
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       kubeconfig KUBECONFIG
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus METRICS
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
`},
}

// write puts the Corefile in dir with its placeholders filled and returns
// its path and the DNS port.
func (c corefile) write(dir, kubeconfig string) (path string, port int, err error) {
	ports, err := skiffserver.FreePorts(4)
	if err != nil {
		return "", 0, err
	}
	loop := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	text := strings.NewReplacer(
		"PORT", strconv.Itoa(ports[0]),
		"KUBECONFIG", kubeconfig,
		"HEALTH", loop(ports[1]),
		"READY", loop(ports[2]),
		"METRICS", loop(ports[3]),
	).Replace(c.text)
	path = filepath.Join(dir, c.name+".Corefile")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", 0, fmt.Errorf("write %s: %w", path, err)
	}
	return path, ports[0], nil
}
