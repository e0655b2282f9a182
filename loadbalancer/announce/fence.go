package announce

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// fence bounds how long this node may answer for an address after its
// last successful Lease write. Other candidates take an expired Lease no
// sooner than the record's leaseDurationSeconds after they saw its last
// write, which completed after it started; so a holder that stops
// answering that long after it started its last successful write never
// answers beside the next holder, however late leaderelection notices that it lost (a stalled
// renewal on a loaded node can notice long after its RenewDeadline).
type fence struct {
	mu    sync.Mutex
	until time.Time
}

// held reports whether this node's hold is still exclusive.
func (f *fence) held() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Before(f.until)
}

func (f *fence) set(until time.Time) {
	f.mu.Lock()
	f.until = until
	f.mu.Unlock()
}

// fencedLock is the Lease lock of one campaign; its writes move the fence.
type fencedLock struct {
	resourcelock.Interface
	fence *fence
}

// Get adds the renew time to the microsecond to the raw record.
// leaderelection decides that a holder is gone when the raw record has
// not changed for the lease duration, and LeaseLock's raw record is JSON
// with times to the second: renewals within one second look like no
// renewal, so with a 1 s lease a candidate counted a live holder's Lease
// as expired up to a second early and took it over (seen as addresses
// moving between healthy nodes, and takeovers 0.2 s after a crash).
func (l *fencedLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r, raw, err := l.Interface.Get(ctx)
	if err != nil || r == nil {
		return r, raw, err
	}
	return r, append(raw, r.RenewTime.UTC().Format(time.RFC3339Nano)...), nil
}

func (l *fencedLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.write(ctx, r, l.Interface.Create)
}

func (l *fencedLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.write(ctx, r, l.Interface.Update)
}

func (l *fencedLock) write(ctx context.Context, r resourcelock.LeaderElectionRecord, w func(context.Context, resourcelock.LeaderElectionRecord) error) error {
	start := time.Now()
	ours := r.HolderIdentity == l.Identity()
	if !ours {
		// Releasing: stop answering before anyone can take over.
		l.fence.set(time.Time{})
	}
	err := w(ctx, r)
	if err == nil && ours {
		l.fence.set(start.Add(time.Duration(r.LeaseDurationSeconds) * time.Second))
	}
	return err
}
