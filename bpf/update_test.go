package bpf_test

import (
	"net/netip"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/bpf/bpftest"
	"github.com/skiffnet/skiff/proxy/lbmap"
	"github.com/skiffnet/skiff/proxy/model"
)

// A client with affinity to two Services keeps its backend in each: the
// affinity entry is per frontend, so using one Service does not overwrite
// the choice made for the other.
func TestSessionAffinityPerFrontend(t *testing.T) {
	n := newNode(t)
	vipB := netip.MustParseAddrPort("127.77.0.3:80")
	n.set(t, vipTCP, unix.IPPROTO_TCP, bpf.FlagAffinity, 3600, bpftest.TCPBackend(t, "a1"), bpftest.TCPBackend(t, "a2"), bpftest.TCPBackend(t, "a3"))
	n.set(t, vipB, unix.IPPROTO_TCP, bpf.FlagAffinity, 3600, bpftest.TCPBackend(t, "b1"), bpftest.TCPBackend(t, "b2"), bpftest.TCPBackend(t, "b3"))

	picked := func(vip netip.AddrPort) string {
		seen := map[string]bool{}
		for _, r := range bpftest.Run(t, n.cgroup, "tcp", vip.String(), 5) {
			if !r.OK {
				t.Fatalf("connect to %s failed: %s", vip, r.Reply)
			}
			seen[r.Reply] = true
		}
		if len(seen) != 1 {
			t.Fatalf("affinity client reached backends %v of %s, want one", seen, vip)
		}
		for b := range seen {
			return b
		}
		return ""
	}
	a, b := picked(vipTCP), picked(vipB)
	// Alternating several times: each time the entry could be lost, the
	// pick is random among three again.
	for range 4 {
		if got := picked(vipTCP); got != a {
			t.Fatalf("after using %s, %s went to %s, was %s", vipB, vipTCP, got, a)
		}
		if got := picked(vipB); got != b {
			t.Fatalf("after using %s, %s went to %s, was %s", vipTCP, vipB, got, b)
		}
	}
}

// Connects keep succeeding while the applier replaces backends of their
// frontend as fast as it can: a program whose lookups straddle one update
// (the count read before it was lowered, the slot or backend looked up
// after their deletion) must pick again, not refuse a Service that has
// endpoints all along.
func TestConnectDuringBackendChurn(t *testing.T) {
	n := newNode(t)
	backends := []netip.AddrPort{bpftest.TCPBackend(t, "a"), bpftest.TCPBackend(t, "b"), bpftest.TCPBackend(t, "c"), bpftest.TCPBackend(t, "d")}
	a := lbmap.New(lbmap.TablesOf(&n.objs.Maps), lbmap.Snapshot{})
	svc := types.NamespacedName{Namespace: "default", Name: "churn"}
	key := model.Key{Addr: vipTCP.Addr(), Port: vipTCP.Port(), Proto: model.TCP, Scope: model.Internal}
	apply := func(bs ...netip.AddrPort) error {
		_, err := a.Apply(svc, []model.Frontend{{Key: key, Kind: model.ClusterIP, Service: svc, Backends: bs}})
		return err
	}
	if err := apply(backends[:3]...); err != nil {
		t.Fatal(err)
	}
	// Every update shrinks or grows the frontend and deletes a backend:
	// always at least two backends, so a refusal is always wrong.
	sets := [][]netip.AddrPort{backends[:3], backends[:2], {backends[0], backends[2], backends[3]}, {backends[2], backends[3]}, {backends[1], backends[2]}}
	stop := make(chan struct{})
	var updates atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := apply(sets[i%len(sets)]...); err != nil {
				done <- err
				return
			}
			updates.Add(1)
		}
	}()
	results := bpftest.Run(t, n.cgroup, "tcp", vipTCP.String(), 3000)
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	failed := map[string]int{}
	for _, r := range results {
		if !r.OK {
			failed[r.Reply]++
		}
	}
	t.Logf("%d connects during %d updates", len(results), updates.Load())
	if len(failed) > 0 {
		t.Errorf("connects failed while backends changed: %v", failed)
	}
}
