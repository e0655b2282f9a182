package lbmap

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/proxy/model"
)

// fakeTable is a map in memory with the kernel's semantics for the calls
// the applier makes.
type fakeTable[K comparable, V any] struct{ m map[K]V }

func (f *fakeTable[K, V]) Put(k, v any) error {
	f.m[k.(K)] = v.(V)
	return nil
}

func (f *fakeTable[K, V]) Delete(k any) error {
	if _, ok := f.m[k.(K)]; !ok {
		return fmt.Errorf("delete: %w", ebpf.ErrKeyNotExist)
	}
	delete(f.m, k.(K))
	return nil
}

// fakeMaps holds the four tables; snapshot reads them back like Read does.
type fakeMaps struct {
	snap Snapshot
}

func newFake() *fakeMaps { return &fakeMaps{snap: newSnapshot()} }

func (f *fakeMaps) tables() Tables {
	return Tables{
		Services: &fakeTable[bpf.ServiceKey, bpf.Service]{f.snap.Services},
		Slots:    &fakeTable[bpf.SlotKey, uint32]{f.snap.Slots},
		Backends: &fakeTable[uint32, bpf.Backend]{f.snap.Backends},
		RevNat:   &fakeTable[uint32, bpf.Frontend]{f.snap.RevNat},
	}
}

var (
	web = types.NamespacedName{Namespace: "ns", Name: "web"}
	api = types.NamespacedName{Namespace: "ns", Name: "api"}
)

func fe(addr string, port uint16, scope model.Scope, backends ...string) model.Frontend {
	f := model.Frontend{Key: model.Key{Addr: netip.MustParseAddr(addr), Port: port, Proto: model.TCP, Scope: scope}}
	for _, b := range backends {
		f.Backends = append(f.Backends, netip.MustParseAddrPort(b))
	}
	return f
}

// render prints what the maps hold, one frontend a line, checking on the
// way that every slot and backend the programs could read is there and
// nothing else is.
func render(t *testing.T, f *fakeMaps) string {
	t.Helper()
	var lines []string
	slots, backends := map[bpf.SlotKey]bool{}, map[uint32]bool{}
	for _, e := range f.snap.Entries() {
		var bs []string
		for _, b := range e.Backends {
			if !b.IsValid() {
				t.Errorf("frontend %v has a slot without a backend", e.Key)
			}
			bs = append(bs, b.String())
		}
		for i := range e.Backends {
			sk := bpf.SlotKey{Id: e.ID, Slot: uint32(i + 1)}
			slots[sk] = true
			backends[f.snap.Slots[sk]] = true
		}
		rn, ok := f.snap.RevNat[e.ID]
		if !ok || bpf.DecodeAddr4(rn.Addr) != e.Key.Addr || bpf.DecodePort(rn.Port) != e.Key.Port {
			t.Errorf("frontend %v: revnat entry %+v", e.Key, rn)
		}
		lines = append(lines, fmt.Sprintf("%s %s flags=%d [%s]", describe(e.Key), "", e.Flags, strings.Join(bs, " ")))
	}
	if len(slots) != len(f.snap.Slots) {
		t.Errorf("slots map holds %d entries, frontends use %d", len(f.snap.Slots), len(slots))
	}
	if len(backends) != len(f.snap.Backends) {
		t.Errorf("backends map holds %d entries, slots use %d", len(f.snap.Backends), len(backends))
	}
	if len(f.snap.RevNat) != len(f.snap.Services) {
		t.Errorf("revnat map holds %d entries for %d frontends", len(f.snap.RevNat), len(f.snap.Services))
	}
	return strings.Join(lines, "\n")
}

func apply(t *testing.T, a *Applier, owner types.NamespacedName, fs ...model.Frontend) []types.NamespacedName {
	t.Helper()
	requeue, err := a.Apply(owner, fs)
	if err != nil {
		t.Fatal(err)
	}
	return requeue
}

func TestApplyWritesFrontends(t *testing.T) {
	f := newFake()
	a := New(f.tables(), f.snap)
	cluster := fe("10.96.0.10", 80, model.Internal, "10.1.0.2:8080", "10.2.0.2:8080")
	nodePort := fe("192.168.1.1", 30080, model.Internal, "10.1.0.2:8080", "10.2.0.2:8080")
	nodePort.AffinityTimeout = 60
	apply(t, a, web, cluster, nodePort)

	want := "10.96.0.10:80/TCP (internal)  flags=0 [10.1.0.2:8080 10.2.0.2:8080]\n" +
		"192.168.1.1:30080/TCP (internal)  flags=1 [10.1.0.2:8080 10.2.0.2:8080]"
	if got := render(t, f); got != want {
		t.Errorf("maps:\n%s\nwant:\n%s", got, want)
	}
	if len(f.snap.Backends) != 2 {
		t.Errorf("%d backend entries, want 2 shared by both frontends", len(f.snap.Backends))
	}
}

func TestApplyWritesOnlyTheDifference(t *testing.T) {
	f := newFake()
	a := New(f.tables(), f.snap)
	apply(t, a, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	apply(t, a, api, fe("10.96.0.11", 80, model.Internal, "10.0.1.1:80"))

	before := a.Stats()
	apply(t, a, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	if a.Stats() != before {
		t.Errorf("re-applying the same frontends wrote %+v", diff(a.Stats(), before))
	}

	// One backend replaced: the other two keep their slots.
	apply(t, a, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.1:80", "10.0.0.3:80", "10.0.0.4:80"))
	if d := diff(a.Stats(), before); d.Puts != 2 || d.Deletes != 1 {
		// put backend 4, put its slot; delete backend 2.
		t.Errorf("replacing one backend made %+v, want 2 puts and 1 delete", d)
	}
	want := "10.96.0.10:80/TCP (internal)  flags=0 [10.0.0.1:80 10.0.0.4:80 10.0.0.3:80]\n" +
		"10.96.0.11:80/TCP (internal)  flags=0 [10.0.1.1:80]"
	if got := render(t, f); got != want {
		t.Errorf("maps:\n%s\nwant:\n%s", got, want)
	}
}

func TestApplyRemovedBackendSlotTakesLast(t *testing.T) {
	f := newFake()
	a := New(f.tables(), f.snap)
	apply(t, a, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	apply(t, a, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.2:80", "10.0.0.3:80"))
	want := "10.96.0.10:80/TCP (internal)  flags=0 [10.0.0.3:80 10.0.0.2:80]"
	if got := render(t, f); got != want {
		t.Errorf("maps:\n%s\nwant:\n%s", got, want)
	}
}

func TestApplyScaleToZeroAndDelete(t *testing.T) {
	f := newFake()
	a := New(f.tables(), f.snap)
	apply(t, a, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.1:80", "10.0.0.2:80"))
	noLocal := fe("192.168.1.1", 30080, model.External)
	noLocal.NoLocal = true
	apply(t, a, web, fe("10.96.0.10", 80, model.Internal), noLocal)
	want := "10.96.0.10:80/TCP (internal)  flags=0 []\n" +
		"192.168.1.1:30080/TCP (external)  flags=2 []"
	if got := render(t, f); got != want {
		t.Errorf("maps:\n%s\nwant:\n%s", got, want)
	}
	apply(t, a, web)
	if got := render(t, f); got != "" {
		t.Errorf("maps after the Service is gone:\n%s", got)
	}
	if n, b, s := a.Occupancy(); n+b+s != 0 {
		t.Errorf("occupancy after delete = %d frontends, %d backends, %d slots", n, b, s)
	}
}

func TestConflictingServicesTakeTurns(t *testing.T) {
	f := newFake()
	a := New(f.tables(), f.snap)
	apply(t, a, web, fe("198.51.100.1", 80, model.Internal, "10.0.0.1:80"))
	apply(t, a, api, fe("198.51.100.1", 80, model.Internal, "10.0.1.1:80"))
	if got, want := render(t, f), "198.51.100.1:80/TCP (internal)  flags=0 [10.0.0.1:80]"; got != want {
		t.Errorf("maps:\n%s\nwant:\n%s", got, want)
	}
	if requeue := apply(t, a, web); !slices.Equal(requeue, []types.NamespacedName{api}) {
		t.Fatalf("releasing the address requeued %v, want [%v]", requeue, api)
	}
	apply(t, a, api, fe("198.51.100.1", 80, model.Internal, "10.0.1.1:80"))
	if got, want := render(t, f), "198.51.100.1:80/TCP (internal)  flags=0 [10.0.1.1:80]"; got != want {
		t.Errorf("maps:\n%s\nwant:\n%s", got, want)
	}
}

// A restarted agent starts from what the maps hold: unchanged Services
// cost no write, and Prune removes what no Service claims any more.
func TestRestartReusesMaps(t *testing.T) {
	f := newFake()
	a := New(f.tables(), f.snap)
	apply(t, a, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.1:80", "10.0.0.2:80"))
	apply(t, a, api, fe("10.96.0.11", 80, model.Internal, "10.0.0.2:80", "10.0.1.1:80"))
	before := render(t, f)

	b := New(f.tables(), f.snap)
	apply(t, b, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.2:80", "10.0.0.1:80"))
	if s := b.Stats(); s.Puts+s.Deletes != 0 {
		t.Errorf("claiming an unchanged frontend after restart wrote %+v", s)
	}
	if err := b.Prune(); err != nil {
		t.Fatal(err)
	}
	want := "10.96.0.10:80/TCP (internal)  flags=0 [10.0.0.1:80 10.0.0.2:80]"
	if got := render(t, f); got != want || !strings.HasPrefix(before, want) {
		t.Errorf("maps after restart and prune:\n%s\nwant:\n%s", got, want)
	}
}

// A crash between writes leaves a count above the slots written: the
// restored frontend is rewritten in full, and stray slots are pruned.
func TestRestartRepairsTornWrite(t *testing.T) {
	f := newFake()
	a := New(f.tables(), f.snap)
	apply(t, a, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	id := f.snap.Services[encodeKey(fe("10.96.0.10", 80, model.Internal).Key)].Id
	delete(f.snap.Slots, bpf.SlotKey{Id: id, Slot: 2})
	f.snap.Slots[bpf.SlotKey{Id: 999, Slot: 1}] = 1 // stray

	b := New(f.tables(), f.snap)
	apply(t, b, web, fe("10.96.0.10", 80, model.Internal, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	if err := b.Prune(); err != nil {
		t.Fatal(err)
	}
	got := render(t, f)
	if !strings.HasPrefix(got, "10.96.0.10:80/TCP (internal)  flags=0 [") || strings.Count(got, "10.0.0.") != 3 {
		t.Errorf("maps after repair:\n%s", got)
	}
}

// TestApplyRandom checks, over random changes to several Services, that
// the maps always hold exactly the frontends last applied and nothing else.
func TestApplyRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	f := newFake()
	a := New(f.tables(), f.snap)
	owners := []types.NamespacedName{web, api, {Namespace: "ns", Name: "db"}}
	desired := map[types.NamespacedName][]model.Frontend{}
	for step := range 2000 {
		if step%500 == 499 {
			// Restart now and then.
			a = New(f.tables(), f.snap)
			for o, fs := range desired {
				apply(t, a, o, fs...)
			}
			if err := a.Prune(); err != nil {
				t.Fatal(err)
			}
		}
		o := owners[rng.IntN(len(owners))]
		var fs []model.Frontend
		for i := range rng.IntN(3) {
			var bs []string
			for range rng.IntN(6) {
				bs = append(bs, fmt.Sprintf("10.0.0.%d:80", rng.IntN(8)+1))
			}
			slices.Sort(bs)
			bs = slices.Compact(bs)
			// Each owner has its own addresses; no conflicts here.
			f := fe(fmt.Sprintf("10.96.%d.%d", slices.Index(owners, o), i), 80, model.Scope(rng.IntN(2)), bs...)
			fs = append(fs, f)
		}
		apply(t, a, o, fs...)
		desired[o] = fs

		var want []string
		for _, fs := range desired {
			for _, f := range fs {
				want = append(want, describe(f.Key)+" "+fmt.Sprint(f.Backends))
			}
		}
		var got []string
		for _, e := range f.snap.Entries() {
			bs := slices.Clone(e.Backends)
			slices.SortFunc(bs, netip.AddrPort.Compare)
			got = append(got, describe(e.Key)+" "+fmt.Sprint(bs))
		}
		slices.Sort(want)
		slices.Sort(got)
		render(t, f) // consistency checks
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: maps hold\n%s\nwant\n%s", step, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func diff(a, b Stats) Stats { return Stats{Puts: a.Puts - b.Puts, Deletes: a.Deletes - b.Deletes} }
