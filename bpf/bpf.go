// Package bpf holds Skiff's service load balancer programs (C sources, the
// objects bpf2go compiled from them, and their Go bindings) and loads,
// pins and attaches them. What goes into the maps is decided in proxy/.
package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Map layouts, shared with the C programs (lb.h). Addresses and ports hold
// network byte order in memory, as the kernel's sock_addr context does.
type (
	ServiceKey  = sockLb4Key
	Service     = sockLb4Service
	SlotKey     = sockLbSlotKey
	Backend     = sockLb4Backend
	Frontend    = sockLb4Frontend
	SockKey     = sockLb4SockKey
	SockVal     = sockLb4SockVal
	AffinityKey = sockLbAffinityKey
	AffinityVal = sockLbAffinityVal
)

// Frontend scopes (lb.h SCOPE_*).
const (
	ScopeExternal uint8 = 0 // traffic entering the node (tc)
	ScopeInternal uint8 = 1 // sockets of the node's own processes and pods
)

// Service flags (lb.h SVC_F_*).
const (
	FlagAffinity uint16 = 0x1 // sessionAffinity ClientIP
	FlagNoLocal  uint16 = 0x2 // no endpoint on this node: unreachable rather than refused
)

// Stat indexes the lb_stats counters (lb.h enum lb_stat).
type Stat uint32

const (
	StatXlateConnect Stat = iota
	StatXlateSendmsg
	StatRejectNoEndpoints
	StatRejectNoLocal
	StatRevNat
	statMax
)

// Maps are the load balancer's maps, pinned by name in the pin directory.
type Maps struct {
	Services   *ebpf.Map // ServiceKey -> Service
	Slots      *ebpf.Map // SlotKey -> backend id (uint32)
	Backends   *ebpf.Map // backend id (uint32) -> Backend
	RevNat     *ebpf.Map // frontend id (uint32) -> Frontend
	SockRevNat *ebpf.Map // SockKey -> SockVal (written by the programs)
	Affinity   *ebpf.Map // AffinityKey -> AffinityVal (written by the programs)
	Stats      *ebpf.Map // per-CPU uint64 counters indexed by Stat
}

// Objects are the loaded programs and their pinned maps.
type Objects struct {
	Maps
	pinDir string
	objs   sockObjects
}

// Load loads the programs, reusing the maps pinned in pinDir (which must be
// on a bpf filesystem) or creating and pinning them there. A pinned map whose
// layout no longer matches (an upgrade changed it) is replaced, so its
// contents are lost and rebuilt by the next sync.
func Load(pinDir string) (*Objects, error) {
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	if ok, err := OnBPFFS(pinDir); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("pin directory %s is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)", pinDir)
	}
	o := &Objects{pinDir: pinDir}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}}
	err := loadSockObjects(&o.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		if err := removeMapPins(pinDir); err != nil {
			return nil, err
		}
		err = loadSockObjects(&o.objs, opts)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load service load balancer programs: %+v", ve)
		}
		return nil, fmt.Errorf("load service load balancer programs: %w", err)
	}
	m := &o.objs.sockMaps
	o.Maps = Maps{
		Services: m.Lb4Services, Slots: m.Lb4Slots, Backends: m.Lb4Backends, RevNat: m.Lb4Revnat,
		SockRevNat: m.Lb4SockRevnat, Affinity: m.LbAffinity, Stats: m.LbStats,
	}
	return o, nil
}

// Close releases the programs and maps of this process. Pinned maps and
// attached programs stay in the kernel.
func (o *Objects) Close() error { return o.objs.Close() }

type attachment struct {
	name   string
	prog   *ebpf.Program
	attach ebpf.AttachType
}

func (o *Objects) attachments() []attachment {
	p := &o.objs.sockPrograms
	return []attachment{
		{"connect4", p.SkiffConnect4, ebpf.AttachCGroupInet4Connect},
		{"sendmsg4", p.SkiffSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		{"recvmsg4", p.SkiffRecvmsg4, ebpf.AttachCGroupUDP4Recvmsg},
		{"getpeername4", p.SkiffGetpeername4, ebpf.AttachCgroupInet4GetPeername},
		// IPv6 sockets dialling v4-mapped Service addresses
		{"connect6", p.SkiffConnect6, ebpf.AttachCGroupInet6Connect},
		{"sendmsg6", p.SkiffSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
		{"recvmsg6", p.SkiffRecvmsg6, ebpf.AttachCGroupUDP6Recvmsg},
		{"getpeername6", p.SkiffGetpeername6, ebpf.AttachCgroupInet6GetPeername},
	}
}

// Attach attaches the socket programs to the cgroup2 directory cgroupPath
// with links pinned in the pin directory. A link pinned by an earlier run
// on the same cgroup is updated in place: the new program replaces the old
// one atomically, so no connect goes untranslated during an agent restart.
func (o *Objects) Attach(cgroupPath string) error {
	cgID, err := cgroupID(cgroupPath)
	if err != nil {
		return err
	}
	for _, a := range o.attachments() {
		pin := filepath.Join(o.pinDir, "link_"+a.name)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			ok, err := sameCgroup(l, cgID)
			if err == nil && ok {
				err = l.Update(a.prog)
				l.Close()
				if err != nil {
					return fmt.Errorf("replace %s program: %w", a.name, err)
				}
				continue
			}
			// Pinned for another cgroup: detach it, attach anew below.
			l.Unpin()
			l.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("load pinned %s link: %w", a.name, err)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: a.attach, Program: a.prog})
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", a.name, cgroupPath, err)
		}
		err = l.Pin(pin)
		l.Close()
		if err != nil {
			return fmt.Errorf("pin %s link: %w", a.name, err)
		}
	}
	return nil
}

func sameCgroup(l link.Link, id uint64) (bool, error) {
	info, err := l.Info()
	if err != nil {
		return false, err
	}
	cg := info.Cgroup()
	return cg != nil && cg.CgroupId == id, nil
}

// cgroupID is the id the kernel reports for a cgroup2 directory: its inode.
func cgroupID(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	return st.Ino, nil
}

// Detach removes the pinned links of pinDir, detaching the programs (the
// socket programs and the tc programs of every interface).
func Detach(pinDir string) error {
	errs := []error{detachTCX(pinDir)}
	for _, name := range []string{"connect4", "sendmsg4", "recvmsg4", "getpeername4", "connect6", "sendmsg6", "recvmsg6", "getpeername6"} {
		if err := os.Remove(filepath.Join(pinDir, "link_"+name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Remove detaches the programs and deletes every pin in pinDir and pinDir
// itself: what `skiff agent cleanup` and tests call to leave no trace.
func Remove(pinDir string) error {
	if err := Detach(pinDir); err != nil {
		return err
	}
	if err := removeMapPins(pinDir); err != nil {
		return err
	}
	if err := RemovePolicy(pinDir); err != nil {
		return err
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func removeMapPins(pinDir string) error {
	var errs []error
	for _, load := range []func() (*ebpf.CollectionSpec, error){loadSock, loadNodeport} {
		spec, err := load()
		if err != nil {
			return err
		}
		for name := range spec.Maps {
			if err := os.Remove(filepath.Join(pinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ReadStats sums the per-CPU counters.
func (m *Maps) ReadStats() ([statMax]uint64, error) {
	var out [statMax]uint64
	for i := Stat(0); i < statMax; i++ {
		var per []uint64
		if err := m.Stats.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read stat %d: %w", i, err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

// OnBPFFS reports whether path (or, when it does not exist yet, its
// nearest existing parent) is on a bpf filesystem.
func OnBPFFS(path string) (bool, error) {
	for {
		var st unix.Statfs_t
		err := unix.Statfs(path, &st)
		if err == nil {
			return st.Type == unix.BPF_FS_MAGIC, nil
		}
		if !errors.Is(err, os.ErrNotExist) || filepath.Dir(path) == path {
			return false, fmt.Errorf("statfs %s: %w", path, err)
		}
		path = filepath.Dir(path)
	}
}

// MountBPFFS mounts a bpf filesystem at dir unless one is there already.
// Each mount is its own instance: pins made under it are private to it.
func MountBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpf filesystem at %s: %w", dir, err)
	}
	return nil
}

// OpenPinned opens the maps pinned in pinDir by a running (or stopped)
// agent, for tools that show what the kernel holds.
func OpenPinned(pinDir string) (*Maps, error) {
	open := func(name string) (*ebpf.Map, error) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		return m, nil
	}
	m := &Maps{}
	var err error
	for _, f := range []struct {
		dst  **ebpf.Map
		name string
	}{
		{&m.Services, "lb4_services"}, {&m.Slots, "lb4_slots"}, {&m.Backends, "lb4_backends"},
		{&m.RevNat, "lb4_revnat"}, {&m.Stats, "lb_stats"},
	} {
		if *f.dst, err = open(f.name); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// Close closes the maps that are open.
func (m *Maps) Close() error {
	var errs []error
	for _, mp := range []*ebpf.Map{m.Services, m.Slots, m.Backends, m.RevNat, m.SockRevNat, m.Affinity, m.Stats} {
		if mp != nil {
			errs = append(errs, mp.Close())
		}
	}
	return errors.Join(errs...)
}
