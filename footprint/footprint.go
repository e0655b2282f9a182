// Package footprint keeps a long-running skiff process's resident memory
// close to what it uses once it has started. Two things make an idle skiff
// process larger than its live data (docs/benchmarks.md, issue 17):
//
//   - The Go heap grows to twice the live heap between collections at the
//     default GOGC=100; the control plane's live heap is large (OpenAPI
//     specs, API schemes), so that headroom is the biggest single item.
//   - Start-up (every package's init, Kubernetes' included, and building
//     the first tables) leaves garbage that the heap keeps until the next
//     collection and that the runtime returns to the kernel only slowly.
package footprint

import (
	"os"
	"runtime/debug"
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

// ReleaseStartup returns the garbage start-up left on the heap to the
// kernel: it collects and gives the free heap back. Call it once the
// process has started.
//
// It does not unmap the binary's pages that only start-up touched, though
// that lowers RSS further: those pages stay in the page cache, one copy
// shared by every skiff process, so dropping them from each process's
// page tables changes what RSS reports, not what the machine has free.
func ReleaseStartup() { debug.FreeOSMemory() }
