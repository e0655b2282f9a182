package dataplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/skiffnet/skiff/agent/handoff"
)

// The names sockets are handed over by. A successor configured with
// another address for a name opens its own socket instead.
const (
	sockIngressHTTP  = "ingress-http"
	sockIngressHTTPS = "ingress-https"
	sockDNSUDP       = "dns-udp"
	sockDNSTCP       = "dns-tcp"
)

// sockets are the data plane's listening sockets. Until release they are
// the data plane's to close; after it, the servers'.
type sockets struct {
	cfg             *Config
	httpLn, httpsLn net.Listener
	dnsUDP          net.PacketConn
	dnsTCP          net.Listener
	released        bool
}

// openSockets takes each socket from the predecessor when it has one for
// the same name and address, and opens it otherwise.
func openSockets(cfg Config, ho *handoff.Handover) (*sockets, error) {
	s := &sockets{cfg: &cfg}
	var err error
	listen := func(name, addr string) net.Listener {
		if err != nil || addr == "" {
			return nil
		}
		var ln net.Listener
		if f := inherited(ho, name, addr); f != nil {
			ln, err = net.FileListener(f)
			f.Close()
		} else {
			ln, err = net.Listen("tcp", addr)
		}
		if err != nil {
			err = listenError(name, "tcp", addr, err)
		}
		return ln
	}
	s.httpLn = listen(sockIngressHTTP, cfg.IngressHTTP)
	s.httpsLn = listen(sockIngressHTTPS, cfg.IngressHTTPS)
	s.dnsTCP = listen(sockDNSTCP, cfg.DNSAddr())
	if err == nil {
		dns := cfg.DNSAddr()
		if f := inherited(ho, sockDNSUDP, dns); f != nil {
			s.dnsUDP, err = net.FilePacketConn(f)
			f.Close()
		} else {
			s.dnsUDP, err = net.ListenPacket("udp", dns)
		}
		if err != nil {
			err = listenError(sockDNSUDP, "udp", dns, err)
		}
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func inherited(ho *handoff.Handover, name, addr string) *os.File {
	if ho == nil {
		return nil
	}
	return ho.Socket(name, addr)
}

func listenError(name, network, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s: %s %s is in use by another program (see `ss -lntup`); stop it, or give the agent other --ingress-http/--ingress-https addresses: %w", name, network, addr, err)
	}
	return fmt.Errorf("%s: listen %s %s: %w", name, network, addr, err)
}

// list names the live sockets, for a successor.
func (s *sockets) list() []handoff.Socket {
	var out []handoff.Socket
	add := func(name, addr string, c any) {
		if sc, ok := c.(syscall.Conn); ok && addr != "" {
			out = append(out, handoff.Socket{Name: name, Addr: addr, Conn: sc})
		}
	}
	add(sockIngressHTTP, s.cfg.IngressHTTP, s.httpLn)
	add(sockIngressHTTPS, s.cfg.IngressHTTPS, s.httpsLn)
	add(sockDNSUDP, s.cfg.DNSAddr(), s.dnsUDP)
	add(sockDNSTCP, s.cfg.DNSAddr(), s.dnsTCP)
	return out
}

// release hands the sockets to the servers, which close them when they
// stop.
func (s *sockets) release() { s.released = true }

func (s *sockets) close() {
	if s.released {
		return
	}
	for _, c := range []interface{ Close() error }{s.httpLn, s.httpsLn, s.dnsUDP, s.dnsTCP} {
		if c != nil {
			c.Close()
		}
	}
}
