// Package footprint keeps a long-running skiff process's resident memory
// close to what it uses once it has started. Two things make an idle skiff
// process larger than its live data (docs/benchmarks.md, issue 17):
//
//   - The Go heap grows to twice the live heap between collections at the
//     default GOGC=100; the control plane's live heap is large (OpenAPI
//     specs, API schemes), so that headroom is the biggest single item.
//   - Every package's init runs in every skiff process, Kubernetes'
//     included, and touches pages of the 160 MB binary all over: a
//     `skiff dataplane` or `skiff agent` maps some 110 MB of the binary
//     it never uses again after start-up.
package footprint

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SetGCPercent sets the garbage collector's target (what GOGC sets) to
// percent, unless the user set GOGC: their setting wins, as does a
// GOMEMLIMIT, which the Go runtime applies by itself.
func SetGCPercent(percent int) {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	debug.SetGCPercent(percent)
}

// ReleaseStartup returns what start-up left behind: garbage on the heap
// (it collects and gives the free heap back to the kernel) and the pages
// of this process's binary that only start-up touched. Those are unmapped
// from the process; they stay in the page cache, and any page still in use
// is mapped again, without I/O, the next time it is touched. Only
// read-only mappings of the executable are unmapped: their contents are
// the file's, so nothing is lost. Call it once the process has started.
func ReleaseStartup() error {
	debug.FreeOSMemory()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this executable: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return fmt.Errorf("find this executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return fmt.Errorf("read this process's mappings: %w", err)
	}
	defer f.Close()
	ranges, err := readOnlyMappings(f, exe)
	if err != nil {
		return err
	}
	for _, r := range ranges {
		// MADV_DONTNEED on a private, never-written file mapping only
		// drops the page table entries: the next access reads the page
		// cache again. Written (copy-on-write) mappings are never passed.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("madvise %s %#x-%#x: %w", exe, r.start, r.end, errno)
		}
	}
	return nil
}

type addrRange struct{ start, end uintptr }

// readOnlyMappings returns the mappings of file path in a /proc/PID/maps
// listing that are not writable.
func readOnlyMappings(maps io.Reader, path string) ([]addrRange, error) {
	var out []addrRange
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// start-end perms offset dev inode [path]
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.Join(f[5:], " ") != path || len(f[1]) < 4 || f[1][1] != '-' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("unexpected line in /proc/self/maps: %q", sc.Text())
		}
		out = append(out, addrRange{uintptr(start), uintptr(end)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/self/maps: %w", err)
	}
	return out, nil
}
