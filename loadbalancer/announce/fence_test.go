package announce

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
)

// TestStalledHolderFallsSilent: the holder's renewals hang (a loaded node,
// a slow API server), so leaderelection notices the loss only when the
// write returns, long after another node took the Lease. The stalled
// holder must stop answering before the new one starts: never two nodes
// answering ARP for one address.
func TestStalledHolderFallsSilent(t *testing.T) {
	client := fake.NewSimpleClientset()
	optimisticLeases(client)
	addr := netip.MustParseAddr("192.168.9.2")
	// Whole seconds: the Lease records its duration in seconds, and
	// that is what the other candidates go by.
	timing := Timing{LeaseDuration: time.Second, RenewDeadline: 750 * time.Millisecond, RetryPeriod: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	fences := map[string]*fence{}
	stall := map[string]*atomic.Bool{}
	for _, n := range []string{"n1", "n2"} {
		stall[n] = &atomic.Bool{}
		e := &elector{client: stallingClient{Interface: client, stalled: stall[n]}, namespace: "kube-system", node: n, timing: timing,
			log: slog.New(slog.DiscardHandler), lead: func(_ netip.Addr, held *fence) {
				mu.Lock()
				defer mu.Unlock()
				fences[n] = held
			}}
		e.reconcile(ctx, map[netip.Addr]bool{addr: true})
	}
	answering := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for n, f := range fences {
			if f != nil && f.held() {
				out = append(out, n)
			}
		}
		return out
	}
	first := ""
	for deadline := time.Now().Add(5 * time.Second); first == "" && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if a := answering(); len(a) == 1 {
			first = a[0]
		}
	}
	if first == "" {
		t.Fatal("no node leads")
	}
	stall[first].Store(true)
	var took string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		a := answering()
		if len(a) > 1 {
			t.Fatalf("%v answer at once: the stalled holder %s did not fall silent", a, first)
		}
		if len(a) == 1 && a[0] != first {
			took = a[0]
			break
		}
	}
	if took == "" {
		t.Fatalf("nobody took over from the stalled %s", first)
	}
}

// stallingClient takes latency for every Lease update, as a real API
// server does, and hangs them for 3 s while stalled is set.
type stallingClient struct {
	kubernetes.Interface
	stalled *atomic.Bool
	latency time.Duration
}

func (c stallingClient) CoordinationV1() coordinationclient.CoordinationV1Interface {
	return stallingCoordination{c.Interface.CoordinationV1(), c}
}

type stallingCoordination struct {
	coordinationclient.CoordinationV1Interface
	c stallingClient
}

func (c stallingCoordination) Leases(ns string) coordinationclient.LeaseInterface {
	return stallingLeases{c.CoordinationV1Interface.Leases(ns), c.c}
}

type stallingLeases struct {
	coordinationclient.LeaseInterface
	c stallingClient
}

func (l stallingLeases) Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	time.Sleep(l.c.latency)
	if l.c.stalled.Load() {
		time.Sleep(3 * time.Second)
	}
	return l.LeaseInterface.Update(ctx, lease, opts)
}
