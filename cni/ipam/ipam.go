// Package ipam hands out pod addresses from a node's PodCIDR and keeps the
// allocations on disk, one file per address, the way the CNI host-local
// plugin does: the file is named by the address and holds the container ID
// and interface name that own it. Files are created with O_EXCL and synced
// before the call returns, under an flock on the range's lock file, so an
// address is never handed out twice, across crashes and restarts, and
// several plugin processes may allocate at the same time.
package ipam

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrExhausted is returned (wrapped) when every address of the range is held.
var ErrExhausted = errors.New("no free address")

// Store is the allocation state of one network on one node.
type Store struct {
	dir   string
	cidr  netip.Prefix
	first netip.Addr // first address handed out
	last  netip.Addr // last address handed out
}

// Allocation is one address and who holds it.
type Allocation struct {
	IP          netip.Addr
	ContainerID string
	IfName      string
}

// Attachment names a container's interface, as CNI's GC lists them.
type Attachment struct {
	ContainerID string
	IfName      string
}

const (
	lockName = "lock"
	lastName = "last_reserved_ip"
)

// Open prepares the store for cidr under dir (created when missing). The
// range skips the network address, the first host address (the node's own
// address in its pod range, used for example by the VXLAN device) and the
// broadcast address.
func Open(dir string, cidr netip.Prefix) (*Store, error) {
	cidr = cidr.Masked()
	if !cidr.Addr().Is4() {
		return nil, fmt.Errorf("pod CIDR %s: only IPv4 ranges are supported", cidr)
	}
	if cidr.Bits() > 29 {
		return nil, fmt.Errorf("pod CIDR %s is too small: want a /29 or larger (nodes get a /24 by default)", cidr)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create IPAM directory: %w", err)
	}
	first := cidr.Addr().Next().Next()
	last := broadcast(cidr).Prev()
	return &Store{dir: dir, cidr: cidr, first: first, last: last}, nil
}

// Size is how many addresses the range can hand out.
func (s *Store) Size() int { return 1<<(32-s.cidr.Bits()) - 3 }

// CIDR is the range the store allocates from.
func (s *Store) CIDR() netip.Prefix { return s.cidr }

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lock takes the store's exclusive lock; the returned func releases it.
// flock is dropped by the kernel when the holder dies, so a killed plugin
// never leaves the range locked.
func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open IPAM lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// Allocate returns the address held by containerID/ifName, or reserves a
// free one. Asking again for the same pair returns the same address, so an
// ADD retried after a crash reuses what the first attempt reserved.
func (s *Store) Allocate(containerID, ifName string) (netip.Addr, error) {
	unlock, err := s.lock()
	if err != nil {
		return netip.Addr{}, err
	}
	defer unlock()
	held, err := s.list(true)
	if err != nil {
		return netip.Addr{}, err
	}
	inUse := 0
	for _, a := range held {
		if a.ContainerID == containerID && a.IfName == ifName && s.cidr.Contains(a.IP) {
			return a.IP, nil
		}
		if s.cidr.Contains(a.IP) {
			inUse++
		}
	}
	// Start after the last address handed out, so a freed address is not
	// reused at once (a peer may still hold connections to it).
	start := s.first
	if b, err := os.ReadFile(filepath.Join(s.dir, lastName)); err == nil {
		if ip, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && ip.Compare(s.first) >= 0 && ip.Compare(s.last) < 0 {
			start = ip.Next()
		}
	}
	ip := start
	for range s.Size() {
		ok, err := s.reserve(ip, containerID, ifName)
		if err != nil {
			return netip.Addr{}, err
		}
		if ok {
			// Only a hint for the next search: losing it is harmless.
			_ = os.WriteFile(filepath.Join(s.dir, lastName), []byte(ip.String()), 0o600)
			return ip, nil
		}
		if ip = ip.Next(); ip.Compare(s.last) > 0 {
			ip = s.first
		}
	}
	return netip.Addr{}, fmt.Errorf("%w in pod CIDR %s (%d of %d addresses held): delete pods on this node, or give nodes a larger range with the server's --node-cidr-mask-size", ErrExhausted, s.cidr, inUse, s.Size())
}

// reserve creates ip's file for the owner; false when another holds it.
func (s *Store) reserve(ip netip.Addr, containerID, ifName string) (bool, error) {
	path := filepath.Join(s.dir, ip.String())
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reserve %s: %w", ip, err)
	}
	_, werr := fmt.Fprintf(f, "%s\n%s\n", containerID, ifName)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return false, fmt.Errorf("reserve %s: %w", ip, err)
	}
	if err := s.syncDir(); err != nil {
		os.Remove(path)
		return false, err
	}
	return true, nil
}

// syncDir makes created and removed names durable.
func (s *Store) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("sync IPAM directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync IPAM directory %s: %w", s.dir, err)
	}
	return nil
}

// Release frees what containerID/ifName holds and returns the freed
// addresses; freeing nothing is not an error (CNI DEL is idempotent).
func (s *Store) Release(containerID, ifName string) ([]netip.Addr, error) {
	return s.remove(func(a Allocation) bool { return a.ContainerID == containerID && a.IfName == ifName })
}

// GC frees every allocation whose owner is not in valid and returns what
// it freed.
func (s *Store) GC(valid []Attachment) ([]Allocation, error) {
	keep := make(map[Attachment]bool, len(valid))
	for _, v := range valid {
		keep[v] = true
	}
	var freed []Allocation
	_, err := s.remove(func(a Allocation) bool {
		if keep[Attachment{a.ContainerID, a.IfName}] {
			return false
		}
		freed = append(freed, a)
		return true
	})
	return freed, err
}

func (s *Store) remove(match func(Allocation) bool) ([]netip.Addr, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	held, err := s.list(true)
	if err != nil {
		return nil, err
	}
	var freed []netip.Addr
	for _, a := range held {
		if !match(a) {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, a.IP.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return freed, fmt.Errorf("free %s: %w", a.IP, err)
		}
		freed = append(freed, a.IP)
	}
	if len(freed) > 0 {
		return freed, s.syncDir()
	}
	return freed, nil
}

// List returns every allocation, sorted by address.
func (s *Store) List() ([]Allocation, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.list(false)
}

// list reads the allocation files; the caller holds the lock. A file
// without a complete owner can only be left by a writer that died between
// creating and syncing it (writers hold the lock until the file is
// complete), so with reclaim it is removed rather than kept forever.
func (s *Store) list(reclaim bool) ([]Allocation, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read IPAM directory: %w", err)
	}
	var out []Allocation
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || e.IsDir() {
			continue
		}
		id, ifName, ok := readOwner(filepath.Join(s.dir, e.Name()))
		if !ok {
			if reclaim {
				os.Remove(filepath.Join(s.dir, e.Name()))
			}
			continue
		}
		out = append(out, Allocation{IP: ip, ContainerID: id, IfName: ifName})
	}
	slices.SortFunc(out, func(a, b Allocation) int { return a.IP.Compare(b.IP) })
	return out, nil
}

func readOwner(path string) (id, ifName string, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var lines []string
	for sc.Scan() {
		lines = append(lines, strings.TrimSpace(sc.Text()))
	}
	if len(lines) < 2 || lines[0] == "" || lines[1] == "" {
		return "", "", false
	}
	return lines[0], lines[1], true
}
