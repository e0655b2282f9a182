package footprint

import (
	"runtime"
	"runtime/debug"
	"testing"
)

var sink [][]byte

// Garbage left by start-up is returned to the kernel, not kept as idle
// heap that RSS still counts.
func TestReleaseStartupReturnsFreeHeap(t *testing.T) {
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	ReleaseStartup()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if kept := m.HeapIdle - m.HeapReleased; kept > 8<<20 {
		t.Errorf("%d MiB of free heap kept after ReleaseStartup; want it returned to the kernel", kept>>20)
	}
}

// A user's GOGC wins over the server's default.
func TestSetGCPercentLeavesTheUsersGOGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "200")
	SetGCPercent(50)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=200 set by the user, SetGCPercent(50) changed the target to %d", got)
	}
	t.Setenv("GOGC", "")
	SetGCPercent(50)
	if got := debug.SetGCPercent(100); got == 50 {
		t.Errorf("GOGC set (empty) by the user, but SetGCPercent still applied 50")
	}
}
