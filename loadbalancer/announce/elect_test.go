package announce

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestElection runs three nodes' electors against one fake API: exactly
// one leads an address; when it withdraws (not eligible any more, or its
// agent stops), another takes over.
func TestElection(t *testing.T) {
	client := fake.NewSimpleClientset()
	optimisticLeases(client)
	addr := netip.MustParseAddr("192.168.9.1")
	timing := Timing{LeaseDuration: 400 * time.Millisecond, RenewDeadline: 300 * time.Millisecond, RetryPeriod: 50 * time.Millisecond}
	var mu sync.Mutex
	leaders := map[string]bool{}
	electors := map[string]*elector{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range []string{"n1", "n2", "n3"} {
		electors[n] = &elector{client: client, namespace: "kube-system", node: n, timing: timing,
			log: slog.New(slog.DiscardHandler), lead: func(_ netip.Addr, held *fence) {
				mu.Lock()
				defer mu.Unlock()
				if held != nil {
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

// optimisticLeases makes the fake API refuse a Lease update made from a
// stale read, as the real API server does (the fake's tracker does not):
// the election is only as safe as that check.
func optimisticLeases(client *fake.Clientset) {
	gvr := coordinationv1.SchemeGroupVersion.WithResource("leases")
	client.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease).ResourceVersion = "1"
		return false, nil, nil
	})
	client.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		old, err := client.Tracker().Get(gvr, l.Namespace, l.Name)
		if err != nil {
			return true, nil, err
		}
		have := old.(*coordinationv1.Lease).ResourceVersion
		if l.ResourceVersion != have {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), l.Name, fmt.Errorf("stale resourceVersion %s, have %s", l.ResourceVersion, have))
		}
		n, _ := strconv.Atoi(have)
		l.ResourceVersion = strconv.Itoa(n + 1)
		return false, nil, nil
	})
}

// TestLiveHolderKeepsTheLease runs three candidates for ten addresses
// with the default timing (a 1 s lease renewed every 200 ms) and 100 ms
// writes: every holder renews in time, so no other candidate ever tries
// to take a Lease over. Before the raw record carried the renew time to
// the microsecond, candidates saw renewals only when the second changed,
// counted live holders' Leases as expired, and tried (and sometimes
// managed) to take them over.
func TestLiveHolderKeepsTheLease(t *testing.T) {
	client := fake.NewSimpleClientset()
	optimisticLeases(client)
	gvr := coordinationv1.SchemeGroupVersion.WithResource("leases")
	var attempts atomic.Int32
	client.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		if old, err := client.Tracker().Get(gvr, l.Namespace, l.Name); err == nil {
			if h := old.(*coordinationv1.Lease).Spec.HolderIdentity; h != nil && l.Spec.HolderIdentity != nil && *h != "" && *h != *l.Spec.HolderIdentity {
				attempts.Add(1)
			}
		}
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	desired := map[netip.Addr]bool{}
	for i := range 10 {
		desired[netip.AddrFrom4([4]byte{192, 168, 9, byte(10 + i)})] = true
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		// Writes take 100 ms, as on a busy API server.
		slow := stallingClient{Interface: client, stalled: &atomic.Bool{}, latency: 100 * time.Millisecond}
		e := &elector{client: slow, namespace: "kube-system", node: n, timing: DefaultTiming,
			log: slog.New(slog.DiscardHandler), lead: func(netip.Addr, *fence) {}}
		e.reconcile(ctx, desired)
	}
	time.Sleep(6 * time.Second)
	if n := attempts.Load(); n != 0 {
		t.Errorf("%d attempts in 6 s to take over a Lease from its live holder, want none", n)
	}
}
