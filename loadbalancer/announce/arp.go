package announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// responder answers ARP requests for the addresses this node leads, on
// one interface, from user space (a raw AF_PACKET socket through
// mdlayher/arp, as MetalLB does): the kernel does not own Service
// addresses, and holds Gateway addresses only through local routes, which
// QuietKernel keeps it from answering for, so no node but the leader does.
type responder struct {
	ifi    *net.Interface
	client *arp.Client
	log    *slog.Logger
	// replied counts ARP replies sent.
	replied func()

	mu      sync.Mutex
	leading map[netip.Addr]*fence
}

func newResponder(iface string, log *slog.Logger) (*responder, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("ARP responder: interface %s: %w", iface, err)
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return nil, fmt.Errorf("ARP responder: raw socket on %s (needs CAP_NET_RAW and an IPv4 address on it): %w", iface, err)
	}
	return &responder{ifi: ifi, client: c, log: log, replied: func() {}, leading: map[netip.Addr]*fence{}}, nil
}

// set starts answering for addr while held says this node's hold is
// exclusive, or stops (held nil); taking over sends gratuitous ARP, so
// clients and switches move to this node without asking.
func (r *responder) set(addr netip.Addr, held *fence) {
	r.mu.Lock()
	was := r.leading[addr] != nil
	if held != nil {
		r.leading[addr] = held
	} else {
		delete(r.leading, addr)
	}
	r.mu.Unlock()
	if held != nil && !was {
		go r.gratuitous(addr)
	}
}

// leads: elected, and the Lease's last renewal recent enough that no
// other node can have taken it over.
func (r *responder) leads(addr netip.Addr) bool {
	r.mu.Lock()
	f := r.leading[addr]
	r.mu.Unlock()
	return f != nil && f.held()
}

// gratuitous announces addr a few times, in case one frame is lost: as a
// request (which Linux uses to update existing neighbour entries) and as
// an unsolicited reply (which some switches and hosts prefer).
func (r *responder) gratuitous(addr netip.Addr) {
	mac := r.ifi.HardwareAddr
	for i := range 3 {
		if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		if !r.leads(addr) {
			return
		}
		for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
			p, err := arp.NewPacket(op, mac, addr, ethernet.Broadcast, addr)
			if err == nil {
				err = r.client.WriteTo(p, ethernet.Broadcast)
			}
			if err != nil {
				r.log.Warn("gratuitous ARP", "address", addr, "err", err)
			}
		}
	}
}

// serve answers requests until ctx ends.
func (r *responder) serve(ctx context.Context) error {
	context.AfterFunc(ctx, func() { r.client.Close() })
	for {
		p, _, err := r.client.Read()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			r.log.Debug("reading ARP", "err", err)
			continue
		}
		// Our own frames come back on a packet socket; answer others only.
		if p.Operation != arp.OperationRequest || p.SenderHardwareAddr.String() == r.ifi.HardwareAddr.String() || !r.leads(p.TargetIP) {
			continue
		}
		if err := r.client.Reply(p, r.ifi.HardwareAddr, p.TargetIP); err != nil {
			r.log.Warn("ARP reply", "address", p.TargetIP, "to", p.SenderIP, "err", err)
			continue
		}
		r.replied()
	}
}
