package cleanup

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PodNetnsDir is where containerd's CRI keeps pod network namespaces.
const PodNetnsDir = "/var/run/netns"

// PodAddresses lists the pod addresses a node's IPAM holds (one file per
// address under the CNI data dir), so only that node's pod namespaces are
// removed.
func PodAddresses(ipamDir string) map[netip.Addr]bool {
	set := map[netip.Addr]bool{}
	filepath.Walk(ipamDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if a, err := netip.ParseAddr(info.Name()); err == nil {
				set[a] = true
			}
		}
		return nil
	})
	return set
}

// RemovePodNetns removes pod network namespaces (cni-*) that no process
// uses any more and whose eth0 holds one of addrs: what a node's pods leave
// when their containerd is killed rather than asked to stop them. Deleting
// the namespace deletes its veth pair, and with it the node's route to the
// pod. It returns how many it removed.
func RemovePodNetns(addrs map[netip.Addr]bool) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	used := usedNetns()
	paths, _ := filepath.Glob(filepath.Join(PodNetnsDir, "cni-*"))
	n := 0
	for _, p := range paths {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) != nil || used[st.Ino] {
			continue
		}
		if a, ok := eth0Addr(p); !ok || !addrs[a] {
			continue
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			return n, fmt.Errorf("unmount %s: %w", p, err)
		}
		if err := os.Remove(p); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// usedNetns are the network namespaces (by inode) some process is in.
func usedNetns() map[uint64]bool {
	used := map[uint64]bool{}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns/net"), &st) == nil {
			used[st.Ino] = true
		}
	}
	return used
}

// eth0Addr is the IPv4 address of eth0 in the namespace mounted at path.
func eth0Addr(path string) (netip.Addr, bool) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return netip.Addr{}, false
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return netip.Addr{}, false
	}
	defer h.Close()
	link, err := h.LinkByName("eth0")
	if err != nil {
		return netip.Addr{}, false
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(addrs[0].IP.To4())
	return a, ok && !strings.HasPrefix(a.String(), "127.")
}
