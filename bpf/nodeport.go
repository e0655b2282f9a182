package bpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Conntrack layouts, shared with nodeport.c.
type (
	CTKey = nodeportCt4Key
	CTVal = nodeportCt4Val
	Iface = nodeportLb4Iface
)

// CTKey.Dir: the hook that looks the entry up.
const (
	CTIngress uint8 = 0 // packets entering through an external interface
	CTEgress  uint8 = 1 // packets leaving through one
)

// CTVal.Flags (nodeport.c CT_F_*).
const (
	CTReply   uint16 = 0x1 // reply of a translated flow: the frontend is restored
	CTSNAT    uint16 = 0x2 // source-translated flow (remote backend)
	CTClosing uint16 = 0x4 // FIN or RST seen
)

// NodePortStat indexes the tc programs' counters (nodeport.c enum np_stat).
type NodePortStat uint32

const (
	NPDNATLocal       NodePortStat = iota // new flows to a local backend
	NPDNATSNAT                            // new flows to a remote backend, source-translated
	NPRevNat                              // reply packets given their frontend back
	NPReject                              // SYNs to a frontend without endpoints answered by a RST
	NPDropNoEndpoints                     // UDP to a frontend without endpoints
	NPDropNoLocal                         // externalTrafficPolicy Local without a local endpoint
	NPDropNoRoute                         // no route to the backend or back to the client
	NPDropSNAT                            // no SNAT address for the interface, or no free port
	npStatMax
)

// SNAT ports (nodeport.c SNAT_PORT_*): above the kernel's default ephemeral
// range, so they do not collide with the node's own connections.
const (
	SNATPortMin = 61000
	SNATPortMax = 65535
)

// NodePort is the tc side of the load balancer: programs on the node's
// external interfaces for traffic entering the node (NodePorts, externalIPs,
// LoadBalancer IPs), sharing the frontend maps with the socket programs.
type NodePort struct {
	Ingress *ebpf.Program // TCX ingress: translation and replies of remote backends
	Egress  *ebpf.Program // TCX egress: replies of local backends

	CT     *ebpf.Map // CTKey -> CTVal, written by the programs, expired by GC
	Ifaces *ebpf.Map // ifindex (uint32) -> Iface
	Stats  *ebpf.Map // per-CPU uint64 counters indexed by NodePortStat

	pinDir string
	objs   nodeportObjects
}

// LoadNodePort loads the tc programs over o's maps; the conntrack table and
// the interface map are pinned in the same directory, so connections
// survive an agent restart.
func (o *Objects) LoadNodePort() (*NodePort, error) {
	s := &o.objs.sockMaps
	opts := &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: o.pinDir},
		MapReplacements: map[string]*ebpf.Map{
			"lb4_services": s.Lb4Services, "lb4_slots": s.Lb4Slots, "lb4_backends": s.Lb4Backends,
			"lb4_revnat": s.Lb4Revnat, "lb4_sock_revnat": s.Lb4SockRevnat, "lb_affinity": s.LbAffinity,
			"lb_stats": s.LbStats,
		},
	}
	n := &NodePort{pinDir: o.pinDir}
	err := loadNodeportObjects(&n.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// An upgrade changed the conntrack layout: start with an empty
		// table (established flows through the node are lost once).
		for _, name := range []string{"lb4_ct", "lb4_ifaces", "lb4_np_stats"} {
			os.Remove(filepath.Join(o.pinDir, name))
		}
		err = loadNodeportObjects(&n.objs, opts)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load node port programs: %+v", ve)
		}
		return nil, fmt.Errorf("load node port programs: %w", err)
	}
	p, m := &n.objs.nodeportPrograms, &n.objs.nodeportMaps
	n.Ingress, n.Egress = p.SkiffNodeportIngress, p.SkiffNodeportEgress
	n.CT, n.Ifaces, n.Stats = m.Lb4Ct, m.Lb4Ifaces, m.Lb4NpStats
	return n, nil
}

// Close releases this process's handles; attached programs and pins stay.
func (n *NodePort) Close() error { return n.objs.Close() }

// Interface is an external interface of the node and the address remote
// backends' replies come back to (the node's address on it). An interface
// without a SNAT address only carries replies: a VXLAN device, through
// which remote backends' replies arrive when the pod network is an overlay.
type Interface struct {
	Name string
	SNAT netip.Addr
}

// ErrInterfaceMissing is wrapped by Attach's error when an interface does
// not exist (yet): the others are attached, and Attach can be called again.
var ErrInterfaceMissing = errors.New("interface missing")

const tcxPinPrefix = "link_tcx_"

func tcxPin(dir, hook, ifname string) string {
	return filepath.Join(dir, tcxPinPrefix+hook+"_"+ifname)
}

// Attach attaches the programs to the interfaces of the calling thread's
// network namespace, with links pinned so they outlive the agent. A link
// pinned by an earlier run is updated in place (no packet goes untranslated
// during a restart); links pinned for interfaces not listed are removed.
func (n *NodePort) Attach(ifaces []Interface) error {
	keep := map[string]bool{}
	indexes := map[uint32]Iface{}
	var missing []string
	for _, i := range ifaces {
		if i.SNAT.IsValid() && !i.SNAT.Is4() {
			return fmt.Errorf("external interface %s: SNAT address %v is not IPv4", i.Name, i.SNAT)
		}
		dev, err := net.InterfaceByName(i.Name)
		if err != nil {
			missing = append(missing, i.Name)
			continue
		}
		if i.SNAT.IsValid() {
			indexes[uint32(dev.Index)] = Iface{SnatAddr: Addr4(i.SNAT)}
		}
		for _, h := range []struct {
			hook   string
			prog   *ebpf.Program
			attach ebpf.AttachType
		}{{"ingress", n.Ingress, ebpf.AttachTCXIngress}, {"egress", n.Egress, ebpf.AttachTCXEgress}} {
			pin := tcxPin(n.pinDir, h.hook, i.Name)
			keep[pin] = true
			if err := attachTCX(pin, dev.Index, h.prog, h.attach); err != nil {
				return fmt.Errorf("attach %s program to %s: %w", h.hook, i.Name, err)
			}
		}
	}
	// Interfaces first, then the programs may look them up; stale
	// indexes go last.
	for idx, v := range indexes {
		if err := n.Ifaces.Put(idx, v); err != nil {
			return fmt.Errorf("write lb4_ifaces: %w", err)
		}
	}
	var idx uint32
	var stale []uint32
	it := n.Ifaces.Iterate()
	for it.Next(&idx, new(Iface)) {
		if _, ok := indexes[idx]; !ok {
			stale = append(stale, idx)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read lb4_ifaces: %w", err)
	}
	for _, idx := range stale {
		if err := n.Ifaces.Delete(idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from lb4_ifaces: %w", err)
		}
	}
	pins, _ := filepath.Glob(filepath.Join(n.pinDir, tcxPinPrefix+"*"))
	for _, p := range pins {
		if !keep[p] {
			os.Remove(p) // the last reference: the kernel detaches the program
		}
	}
	if missing != nil {
		return fmt.Errorf("%w: %s", ErrInterfaceMissing, strings.Join(missing, ", "))
	}
	return nil
}

func attachTCX(pin string, ifindex int, prog *ebpf.Program, attach ebpf.AttachType) error {
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, err := l.Info()
		if err == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex &&
			ebpf.AttachType(info.TCX().AttachType) == attach {
			err = l.Update(prog)
			l.Close()
			return err
		}
		// The interface was replaced (a new ifindex), or the link is gone.
		l.Unpin()
		l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("load pinned link: %w", err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: attach})
	if err != nil {
		return err
	}
	defer l.Close()
	return l.Pin(pin)
}

// DetachNodePort detaches the tc programs from every interface by
// removing their pinned links; the conntrack table stays pinned.
func DetachNodePort(pinDir string) error { return detachTCX(pinDir) }

// detachTCX removes every pinned tc link in pinDir.
func detachTCX(pinDir string) error {
	pins, err := filepath.Glob(filepath.Join(pinDir, tcxPinPrefix+"*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range pins {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReadStats sums the per-CPU counters of the tc programs.
func (n *NodePort) ReadStats() ([npStatMax]uint64, error) {
	var out [npStatMax]uint64
	for i := NodePortStat(0); i < npStatMax; i++ {
		var per []uint64
		if err := n.Stats.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read node port stat %d: %w", i, err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// Monotonic is the clock of CTVal.Expires (bpf_ktime_get_ns).
func Monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// Partner is the key of the other half of a conntrack entry: a forward
// entry's reply entry, or a reply entry's forward entry.
func Partner(k CTKey, v CTVal) CTKey {
	p := CTKey{Proto: k.Proto}
	switch {
	case v.Flags&CTReply == 0 && v.Flags&CTSNAT != 0:
		p.Saddr, p.Daddr, p.Sport, p.Dport, p.Dir = v.Addr, v.Addr2, v.Port, v.Port2, CTIngress
	case v.Flags&CTReply == 0:
		p.Saddr, p.Daddr, p.Sport, p.Dport, p.Dir = v.Addr, k.Saddr, v.Port, k.Sport, CTEgress
	case v.Flags&CTSNAT != 0:
		p.Saddr, p.Daddr, p.Sport, p.Dport, p.Dir = v.Addr2, v.Addr, v.Port2, v.Port, CTIngress
	default:
		p.Saddr, p.Daddr, p.Sport, p.Dport, p.Dir = k.Daddr, v.Addr, k.Dport, v.Port, CTIngress
	}
	return p
}

// GC deletes expired conntrack entries. The two halves of a flow go
// together: an entry stays while its partner (which still points back at
// it) has not expired, so a flow that only talks one way keeps its reply
// translation. It returns how many entries it deleted and how many remain.
func (n *NodePort) GC() (deleted, remaining int, err error) {
	now := uint64(Monotonic())
	all := map[CTKey]CTVal{}
	var k CTKey
	var v CTVal
	it := n.CT.Iterate()
	for it.Next(&k, &v) {
		all[k] = v
	}
	if err := it.Err(); err != nil {
		return 0, 0, fmt.Errorf("read lb4_ct: %w", err)
	}
	for k, v := range all {
		if v.Expires > now {
			continue
		}
		pk := Partner(k, v)
		if pv, ok := all[pk]; ok && pv.Expires > now && Partner(pk, pv) == k {
			continue
		}
		if err := n.CT.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return deleted, len(all) - deleted, fmt.Errorf("delete from lb4_ct: %w", err)
		}
		deleted++
	}
	return deleted, len(all) - deleted, nil
}

// String renders a conntrack entry for logs and tests.
func (k CTKey) String() string {
	dir := "in"
	if k.Dir == CTEgress {
		dir = "out"
	}
	proto := "tcp"
	if k.Proto == unix.IPPROTO_UDP {
		proto = "udp"
	}
	return fmt.Sprintf("%s %s %s:%d -> %s:%d", dir, proto, DecodeAddr4(k.Saddr), DecodePort(k.Sport),
		DecodeAddr4(k.Daddr), DecodePort(k.Dport))
}
