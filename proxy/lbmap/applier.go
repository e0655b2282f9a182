package lbmap

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/proxy/model"
)

// Table is the part of *ebpf.Map the applier writes through.
type Table interface {
	Put(key, value any) error
	Delete(key any) error
}

// Tables are the maps the applier owns.
type Tables struct {
	Services, Slots, Backends, RevNat Table
}

// TablesOf returns the tables of loaded maps.
func TablesOf(m *bpf.Maps) Tables {
	return Tables{Services: m.Services, Slots: m.Slots, Backends: m.Backends, RevNat: m.RevNat}
}

type backendKey struct {
	addr  netip.AddrPort
	proto model.Proto
}

type frontend struct {
	id      uint32
	owner   types.NamespacedName // zero when restored and not yet claimed
	flags   uint16
	timeout uint32
	slots   []uint32 // backend ids of slots 1..n
	dirty   bool     // restored from a torn write: rewrite in full
}

type orphan struct {
	t   func(Tables) Table
	key any
}

type backend struct {
	id   uint32
	refs int
}

// Applier writes the difference between what the maps hold and what a
// Service wants. It is not safe for concurrent use.
type Applier struct {
	t         Tables
	frontends map[model.Key]*frontend
	owned     map[types.NamespacedName][]model.Key
	backends  map[backendKey]*backend
	byID      map[uint32]backendKey
	blocked   map[model.Key][]types.NamespacedName // Services waiting for a frontend another one holds
	orphans   []orphan                             // restored entries no frontend uses, for Prune
	feIDs     ids
	beIDs     ids
	stats     Stats
	nslots    int
}

// Stats count the writes made so far.
type Stats struct {
	Puts, Deletes int
}

// New returns an applier writing to t, which hold snap. Frontends in snap
// keep their ids and slot order; they belong to no Service until Apply
// claims them, and Prune removes the ones nobody claims.
func New(t Tables, snap Snapshot) *Applier {
	a := &Applier{
		t:         t,
		frontends: map[model.Key]*frontend{},
		owned:     map[types.NamespacedName][]model.Key{},
		backends:  map[backendKey]*backend{},
		byID:      map[uint32]backendKey{},
		blocked:   map[model.Key][]types.NamespacedName{},
		feIDs:     ids{used: map[uint32]bool{}},
		beIDs:     ids{used: map[uint32]bool{}},
	}
	for id, b := range snap.Backends {
		k := backendKey{netip.AddrPortFrom(bpf.DecodeAddr4(b.Addr), bpf.DecodePort(b.Port)), model.Proto(b.Proto)}
		a.backends[k] = &backend{id: id}
		a.byID[id] = k
		a.beIDs.used[id] = true
	}
	usedSlots := map[bpf.SlotKey]bool{}
	for k, v := range snap.Services {
		fe := &frontend{id: v.Id, flags: v.Flags, timeout: v.AffinityTimeout}
		for slot := uint32(1); slot <= uint32(v.Count); slot++ {
			sk := bpf.SlotKey{Id: v.Id, Slot: slot}
			id, ok := snap.Slots[sk]
			if _, known := a.byID[id]; !ok || !known {
				// A torn write from a crash: drop the rest, the next
				// Apply rewrites the frontend in full.
				fe.dirty = true
				break
			}
			usedSlots[sk] = true
			fe.slots = append(fe.slots, id)
			a.backends[a.byID[id]].refs++
			a.nslots++
		}
		if rn, ok := snap.RevNat[v.Id]; !ok || rn.Addr != k.Addr || rn.Port != k.Port {
			fe.dirty = true
		}
		a.frontends[decodeKey(k)] = fe
		a.feIDs.used[v.Id] = true
	}
	for k := range snap.Slots {
		if !usedSlots[k] {
			a.orphans = append(a.orphans, orphan{func(t Tables) Table { return t.Slots }, k})
		}
	}
	for id := range snap.RevNat {
		if !a.feIDs.used[id] {
			a.orphans = append(a.orphans, orphan{func(t Tables) Table { return t.RevNat }, id})
		}
	}
	return a
}

// Stats returns the number of map writes made so far.
func (a *Applier) Stats() Stats { return a.stats }

// Occupancy counts frontends, backends and slots in the maps.
func (a *Applier) Occupancy() (frontends, backends, slots int) {
	return len(a.frontends), len(a.backends), a.nslots
}

// Apply makes the frontends of Service owner exactly fs (nil when the
// Service is gone or has no frontends). It returns Services to apply again:
// those that wanted a frontend owner held until now.
func (a *Applier) Apply(owner types.NamespacedName, fs []model.Frontend) ([]types.NamespacedName, error) {
	want := map[model.Key]bool{}
	var keys []model.Key
	var errs []error
	for i := range fs {
		f := &fs[i]
		if want[f.Key] {
			continue
		}
		if fe, ok := a.frontends[f.Key]; ok && fe.owner != owner && fe.owner != (types.NamespacedName{}) {
			// Two Services claim one address and port: the first keeps
			// it, the other gets it when the first lets go.
			if !slices.Contains(a.blocked[f.Key], owner) {
				a.blocked[f.Key] = append(a.blocked[f.Key], owner)
			}
			continue
		}
		want[f.Key] = true
		keys = append(keys, f.Key)
		if err := a.upsert(owner, f); err != nil {
			errs = append(errs, fmt.Errorf("frontend %s: %w", describe(f.Key), err))
		}
	}
	var requeue []types.NamespacedName
	for _, k := range a.owned[owner] {
		if want[k] {
			continue
		}
		if err := a.remove(k); err != nil {
			errs = append(errs, fmt.Errorf("remove frontend %s: %w", describe(k), err))
		}
		requeue = append(requeue, a.blocked[k]...)
		delete(a.blocked, k)
	}
	if len(keys) == 0 {
		delete(a.owned, owner)
	} else {
		a.owned[owner] = keys
	}
	return requeue, errors.Join(errs...)
}

// Prune removes the frontends no Service claimed since New: what the last
// run wrote for Services deleted while the agent was down. Call it after
// the first full sync.
func (a *Applier) Prune() error {
	var errs []error
	for k, fe := range a.frontends {
		if fe.owner == (types.NamespacedName{}) {
			errs = append(errs, a.remove(k))
		}
	}
	for k, b := range a.backends {
		if b.refs == 0 {
			b.refs = 1
			errs = append(errs, a.release(b.id))
			delete(a.backends, k)
		}
	}
	// Orphans restored from the maps, unless an Apply since reused them.
	slotsOf := map[uint32]int{}
	for _, fe := range a.frontends {
		slotsOf[fe.id] = len(fe.slots)
	}
	for _, o := range a.orphans {
		switch k := o.key.(type) {
		case bpf.SlotKey:
			if int(k.Slot) <= slotsOf[k.Id] {
				continue
			}
		case uint32:
			if a.feIDs.used[k] {
				continue
			}
		}
		errs = append(errs, a.del(o.t(a.t), o.key))
	}
	a.orphans = nil
	return errors.Join(errs...)
}

func (a *Applier) upsert(owner types.NamespacedName, f *model.Frontend) error {
	fe, existed := a.frontends[f.Key]
	if !existed {
		id, err := a.feIDs.alloc()
		if err != nil {
			return err
		}
		fe = &frontend{id: id}
		a.frontends[f.Key] = fe
	}
	fe.owner = owner

	// Keep every remaining backend in its slot: affinity entries name a
	// slot, and a connection's backend should not move because another
	// one went away. New backends fill the slots of removed ones; left
	// over holes take the last backends.
	want := map[backendKey]bool{}
	for _, b := range f.Backends {
		want[backendKey{b, f.Proto}] = true
	}
	next := slices.Clone(fe.slots)
	var holes []int
	var released []uint32
	for i, id := range next {
		if k := a.byID[id]; want[k] {
			delete(want, k)
		} else {
			holes = append(holes, i)
			released = append(released, id)
		}
	}
	for _, b := range f.Backends {
		k := backendKey{b, f.Proto}
		if !want[k] {
			continue
		}
		delete(want, k)
		id, err := a.acquire(k)
		if err != nil {
			return err
		}
		if len(holes) > 0 {
			next[holes[0]], holes = id, holes[1:]
		} else {
			next = append(next, id)
		}
	}
	for len(holes) > 0 {
		last := len(next) - 1
		if holes[len(holes)-1] == last {
			holes = holes[:len(holes)-1]
		} else {
			next[holes[0]], holes = next[last], holes[1:]
		}
		next = next[:last]
	}
	for len(next) > 0xffff { // the count is 16 bits
		released = append(released, next[len(next)-1])
		next = next[:len(next)-1]
	}

	// New slots first, then the count that makes them visible, then
	// delete slots beyond the count.
	for i, id := range next {
		if i < len(fe.slots) && fe.slots[i] == id && !fe.dirty {
			continue
		}
		if err := a.put(a.t.Slots, bpf.SlotKey{Id: fe.id, Slot: uint32(i + 1)}, id); err != nil {
			return err
		}
	}
	if !existed || fe.dirty {
		rn := bpf.Frontend{Addr: bpf.Addr4(f.Addr), Port: bpf.Port(f.Key.Port)}
		if err := a.put(a.t.RevNat, fe.id, rn); err != nil {
			return err
		}
	}
	flags, timeout := uint16(0), f.AffinityTimeout
	if timeout != 0 {
		flags |= bpf.FlagAffinity
	}
	if f.NoLocal {
		flags |= bpf.FlagNoLocal
	}
	if !existed || fe.dirty || len(next) != len(fe.slots) || flags != fe.flags || timeout != fe.timeout {
		v := bpf.Service{Id: fe.id, Count: uint16(len(next)), Flags: flags, AffinityTimeout: timeout}
		if err := a.put(a.t.Services, encodeKey(f.Key), v); err != nil {
			return err
		}
	}
	for i := len(next); i < len(fe.slots); i++ {
		if err := a.del(a.t.Slots, bpf.SlotKey{Id: fe.id, Slot: uint32(i + 1)}); err != nil {
			return err
		}
	}
	a.nslots += len(next) - len(fe.slots)
	fe.slots, fe.flags, fe.timeout, fe.dirty = next, flags, timeout, false
	for _, id := range released {
		if err := a.release(id); err != nil {
			return err
		}
	}
	return nil
}

func (a *Applier) remove(k model.Key) error {
	fe := a.frontends[k]
	if err := a.del(a.t.Services, encodeKey(k)); err != nil {
		return err
	}
	delete(a.frontends, k)
	a.nslots -= len(fe.slots)
	var errs []error
	for i, id := range fe.slots {
		errs = append(errs, a.del(a.t.Slots, bpf.SlotKey{Id: fe.id, Slot: uint32(i + 1)}), a.release(id))
	}
	errs = append(errs, a.del(a.t.RevNat, fe.id))
	a.feIDs.free(fe.id)
	return errors.Join(errs...)
}

func (a *Applier) acquire(k backendKey) (uint32, error) {
	if b, ok := a.backends[k]; ok {
		b.refs++
		return b.id, nil
	}
	id, err := a.beIDs.alloc()
	if err != nil {
		return 0, err
	}
	v := bpf.Backend{Addr: bpf.Addr4(k.addr.Addr()), Port: bpf.Port(k.addr.Port()), Proto: uint8(k.proto)}
	if err := a.put(a.t.Backends, id, v); err != nil {
		a.beIDs.free(id)
		return 0, err
	}
	a.backends[k] = &backend{id: id, refs: 1}
	a.byID[id] = k
	return id, nil
}

func (a *Applier) release(id uint32) error {
	k, ok := a.byID[id]
	if !ok {
		return nil
	}
	b := a.backends[k]
	if b.refs--; b.refs > 0 {
		return nil
	}
	delete(a.backends, k)
	delete(a.byID, id)
	a.beIDs.free(id)
	return a.del(a.t.Backends, id)
}

func (a *Applier) put(t Table, k, v any) error {
	a.stats.Puts++
	return t.Put(k, v)
}

func (a *Applier) del(t Table, k any) error {
	a.stats.Deletes++
	if err := t.Delete(k); err != nil && !isNotExist(err) {
		return err
	}
	return nil
}

func isNotExist(err error) bool { return errors.Is(err, ebpf.ErrKeyNotExist) }

func describe(k model.Key) string {
	return fmt.Sprintf("%s/%s (%s)", netip.AddrPortFrom(k.Addr, k.Port), k.Proto, k.Scope)
}

// ids hands out small non-zero ids (0 means "none" to the programs).
type ids struct {
	used map[uint32]bool
	next uint32
}

func (s *ids) alloc() (uint32, error) {
	for range 1 << 24 {
		s.next++
		if s.next == 0 || s.next >= 1<<24 {
			s.next = 1
		}
		if !s.used[s.next] {
			s.used[s.next] = true
			return s.next, nil
		}
	}
	return 0, errors.New("no free id")
}

func (s *ids) free(id uint32) { delete(s.used, id) }
