package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, cidr string) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), netip.MustParsePrefix(cidr))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAllocateSkipsReservedAndIsIdempotent(t *testing.T) {
	s := open(t, "10.244.1.0/29") // .2 to .6 usable
	var got []string
	for i := range 5 {
		ip, err := s.Allocate(fmt.Sprintf("c%d", i), "eth0")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ip.String())
	}
	if want := "10.244.1.2 10.244.1.3 10.244.1.4 10.244.1.5 10.244.1.6"; strings.Join(got, " ") != want {
		t.Fatalf("allocated %v, want %s", got, want)
	}
	again, err := s.Allocate("c3", "eth0")
	if err != nil || again.String() != "10.244.1.5" {
		t.Fatalf("second ADD of c3 got %v %v, want its first address 10.244.1.5", again, err)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "10.244.1.5"))
	if err != nil || string(b) != "c3\neth0\n" {
		t.Fatalf("file for 10.244.1.5 holds %q (%v), want the owner", b, err)
	}
}

func TestExhaustedSaysWhatToDo(t *testing.T) {
	s := open(t, "10.244.1.0/29")
	for i := range s.Size() {
		if _, err := s.Allocate(fmt.Sprint(i), "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Allocate("one-too-many", "eth0")
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("got %v, want ErrExhausted", err)
	}
	for _, want := range []string{"10.244.1.0/29", "5 of 5", "--node-cidr-mask-size"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// Freeing one makes room again.
	if freed, err := s.Release("2", "eth0"); err != nil || len(freed) != 1 {
		t.Fatalf("release: %v %v", freed, err)
	}
	if _, err := s.Allocate("one-too-many", "eth0"); err != nil {
		t.Fatal(err)
	}
}

func TestReleaseIsIdempotentAndDoesNotReuseAtOnce(t *testing.T) {
	s := open(t, "10.244.1.0/24")
	a, _ := s.Allocate("a", "eth0")
	if _, err := s.Release("a", "eth0"); err != nil {
		t.Fatal(err)
	}
	if freed, err := s.Release("a", "eth0"); err != nil || len(freed) != 0 {
		t.Fatalf("second release: %v %v, want nothing freed and no error", freed, err)
	}
	b, _ := s.Allocate("b", "eth0")
	if a == b {
		t.Fatalf("freed address %s handed out again at once", a)
	}
}

func TestGCKeepsOnlyValid(t *testing.T) {
	s := open(t, "10.244.1.0/24")
	for _, id := range []string{"a", "b", "c"} {
		if _, err := s.Allocate(id, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	freed, err := s.GC([]Attachment{{"b", "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(freed) != 2 || freed[0].ContainerID != "a" || freed[1].ContainerID != "c" {
		t.Fatalf("GC freed %+v, want a and c", freed)
	}
	left, _ := s.List()
	if len(left) != 1 || left[0].ContainerID != "b" {
		t.Fatalf("left %+v, want only b", left)
	}
}

// A plugin killed between creating an address file and writing its owner
// leaves an empty file; it must not hold the address forever.
func TestTornFileIsReclaimed(t *testing.T) {
	s := open(t, "10.244.1.0/29")
	for i := 2; i <= 6; i++ {
		os.WriteFile(filepath.Join(s.dir, fmt.Sprintf("10.244.1.%d", i)), nil, 0o600)
	}
	ip, err := s.Allocate("c", "eth0")
	if err != nil {
		t.Fatalf("allocate with only torn files present: %v", err)
	}
	if !s.CIDR().Contains(ip) {
		t.Fatalf("got %s outside the range", ip)
	}
}

func TestConcurrentAllocationsAreUnique(t *testing.T) {
	s := open(t, "10.244.1.0/24")
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			// A second Store on the same directory stands for another
			// plugin process: only the lock file serialises them.
			st, err := Open(s.dir, s.CIDR())
			if err != nil {
				t.Error(err)
				return
			}
			id := fmt.Sprint(i)
			ip, err := st.Allocate(id, "eth0")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := seen[ip]; dup {
				t.Errorf("%s given to %s and %s", ip, other, id)
			}
			seen[ip] = id
		})
	}
	wg.Wait()
	if len(seen) != 100 {
		t.Fatalf("%d distinct addresses, want 100", len(seen))
	}
}

func TestOpenRejectsBadRanges(t *testing.T) {
	for _, cidr := range []string{"10.244.1.0/30", "fd00::/64"} {
		if _, err := Open(t.TempDir(), netip.MustParsePrefix(cidr)); err == nil {
			t.Errorf("Open(%s) succeeded", cidr)
		}
	}
}
