package footprint

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyMappingsSkipsWritableAndOtherFiles(t *testing.T) {
	maps := `00400000-01a00000 r-xp 00000000 fd:01 1234 /usr/local/bin/skiff
01a00000-03000000 r--p 01600000 fd:01 1234 /usr/local/bin/skiff
03000000-03100000 rw-p 02c00000 fd:01 1234 /usr/local/bin/skiff
03100000-03200000 rw-p 00000000 00:00 0 
7f0000000000-7f0000100000 r--p 00000000 fd:01 99 /usr/lib/locale/C.utf8/LC_CTYPE
7f0000100000-7f0000200000 r--p 00000000 fd:01 1234 /usr/local/bin/skiff-other
`
	got, err := readOnlyMappings(strings.NewReader(maps), "/usr/local/bin/skiff")
	if err != nil {
		t.Fatal(err)
	}
	want := []addrRange{{0x400000, 0x1a00000}, {0x1a00000, 0x3000000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %#v, want %#v", got, want)
	}
}

// The test binary keeps running (and reporting) after its own pages were
// dropped: they come back from the page cache when used.
func TestReleaseStartupLowersFileBackedPages(t *testing.T) {
	before := rssFile(t)
	if err := ReleaseStartup(); err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	if after >= before {
		t.Fatalf("RssFile %d kB before, %d kB after: nothing was released", before, after)
	}
}

func rssFile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssFile:" {
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
