package main

import "github.com/skiffnet/skiff/bench/pinned"

// dnsServer is a DNS server process this program started with package
// pinned, and the address it answers on.
type dnsServer struct {
	*pinned.Proc
	addr string // 127.0.0.1:PORT
}

func startDNSServer(name, addr, dir string, cpu, nice int, argv ...string) (*dnsServer, error) {
	p, err := pinned.Start(name, dir, cpu, nice, nil, argv...)
	if err != nil {
		return nil, err
	}
	return &dnsServer{Proc: p, addr: addr}, nil
}
