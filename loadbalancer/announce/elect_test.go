package announce

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
)

// TestElection runs three nodes' electors against one fake API: exactly
// one leads an address; when it withdraws (not eligible any more, or its
// agent stops), another takes over.
func TestElection(t *testing.T) {
	client := fake.NewSimpleClientset()
	addr := netip.MustParseAddr("192.168.9.1")
	timing := Timing{LeaseDuration: 400 * time.Millisecond, RenewDeadline: 300 * time.Millisecond, RetryPeriod: 50 * time.Millisecond}
	var mu sync.Mutex
	leaders := map[string]bool{}
	electors := map[string]*elector{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range []string{"n1", "n2", "n3"} {
		electors[n] = &elector{client: client, namespace: "kube-system", node: n, timing: timing,
			log: slog.New(slog.DiscardHandler), lead: func(_ netip.Addr, l bool) {
				mu.Lock()
				defer mu.Unlock()
				if l {
					leaders[n] = true
				} else {
					delete(leaders, n)
				}
			}}
		electors[n].reconcile(ctx, map[netip.Addr]bool{addr: true})
	}
	one := func() string {
		var who string
		err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			if len(leaders) > 1 {
				t.Fatalf("two leaders at once: %v", leaders)
			}
			for n := range leaders {
				who = n
			}
			return len(leaders) == 1, nil
		})
		if err != nil {
			t.Fatalf("no leader: %v", err)
		}
		return who
	}
	first := one()
	// The leader becomes ineligible: it releases the Lease.
	electors[first].reconcile(ctx, map[netip.Addr]bool{addr: false})
	electors[first].wait()
	second := one()
	if second == first {
		t.Fatalf("%s still leads after withdrawing", first)
	}
	// Nobody eligible: nobody leads.
	for _, e := range electors {
		e.reconcile(ctx, map[netip.Addr]bool{})
		e.wait()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaders) != 0 {
		t.Errorf("leaders with no eligible node: %v", leaders)
	}
}
