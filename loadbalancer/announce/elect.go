package announce

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Timing is the Lease settings. Failover takes about LeaseDuration plus
// one RetryPeriod after the holder stops renewing: the other candidates
// take an expired Lease on their next try. Each address costs every
// candidate one read per RetryPeriod, and its holder one write.
type Timing struct {
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// DefaultTiming aims at failover under 2 s (issue 14); Cilium's L2
// announcements default to a 15 s lease for fewer API writes. The lease
// cannot be shorter: the Lease records its duration in whole seconds.
// After a crash the others count the lease from their first read of the
// last renewal, and leaderelection retries every 1-2.2 retry periods
// (its jitter): with 200 ms, a takeover comes 0.8-1.9 s after the crash.
var DefaultTiming = Timing{LeaseDuration: time.Second, RenewDeadline: 750 * time.Millisecond, RetryPeriod: 200 * time.Millisecond}

func (t Timing) String() string {
	return fmt.Sprintf("lease %v, renew deadline %v, retry %v", t.LeaseDuration, t.RenewDeadline, t.RetryPeriod)
}

// LeaseName is the Lease electing the node that announces addr.
func LeaseName(addr netip.Addr) string {
	return "skiff-lb-" + strings.ReplaceAll(addr.String(), ".", "-")
}

// elector runs one leaderelection candidate per eligible address.
type elector struct {
	client    kubernetes.Interface
	namespace string
	node      string
	timing    Timing
	log       *slog.Logger
	// lead is told when this node starts leading addr (with the fence
	// that says how long its hold is exclusive) and when it stops (nil).
	lead func(addr netip.Addr, held *fence)

	mu      sync.Mutex
	running map[netip.Addr]*campaign
	// stopping are cancelled campaigns that may still hold a Lease.
	stopping []*campaign
}

type campaign struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func ctxDone(c *campaign) bool { return c.ctx.Err() != nil }

// reconcile runs for the eligible addresses and withdraws from the rest,
// releasing their Leases so another node takes over at once.
func (e *elector) reconcile(ctx context.Context, desired map[netip.Addr]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running == nil {
		e.running = map[netip.Addr]*campaign{}
	}
	for addr, c := range e.running {
		if !desired[addr] {
			c.cancel()
			delete(e.running, addr)
			e.stopping = append(e.stopping, c)
		}
	}
	for addr, eligible := range desired {
		if eligible && e.running[addr] == nil {
			cctx, cancel := context.WithCancel(ctx)
			c := &campaign{ctx: cctx, cancel: cancel, done: make(chan struct{})}
			e.running[addr] = c
			go func() {
				defer close(c.done)
				e.campaign(cctx, addr)
			}()
		}
	}
}

// wait returns once the cancelled campaigns (all, after ctx is
// cancelled) have ended and released their Leases.
func (e *elector) wait() {
	e.mu.Lock()
	cs := e.stopping
	e.stopping = nil
	for _, c := range e.running {
		select {
		case <-c.done:
		default:
			if ctxDone(c) {
				cs = append(cs, c)
			}
		}
	}
	e.mu.Unlock()
	for _, c := range cs {
		<-c.done
	}
}

// campaign stands for addr until ctx ends: a lost Lease is contested again.
func (e *elector) campaign(ctx context.Context, addr netip.Addr) {
	for ctx.Err() == nil {
		// leaderelection calls OnStartedLeading on a goroutine of its own,
		// which may run after Run returned; a term that is over ignores it,
		// so a node never answers for a Lease it no longer holds.
		var t term
		f := &fence{}
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &fencedLock{Interface: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Namespace: e.namespace, Name: LeaseName(addr)},
				Client:     e.client.CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: e.node},
			}, fence: f},
			LeaseDuration:   e.timing.LeaseDuration,
			RenewDeadline:   e.timing.RenewDeadline,
			RetryPeriod:     e.timing.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            addr.String(),
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) { t.start(func() { e.lead(addr, f) }) },
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			e.log.Error("load balancer lease settings refused", "address", addr, "err", err)
			return
		}
		le.Run(ctx)
		t.end(func() { e.lead(addr, nil) })
		select {
		case <-ctx.Done():
		case <-time.After(e.timing.RetryPeriod):
		}
	}
}

// term is one leaderelection.Run: leading starts at most once, and never
// after the term is over.
type term struct {
	mu            sync.Mutex
	leading, over bool
}

func (t *term) start(lead func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.over {
		t.leading = true
		lead()
	}
}

func (t *term) end(stop func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.over = true
	if t.leading {
		stop()
	}
}
