package server

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// controllersLease is the Lease that picks the one server running Skiff's
// own cluster-wide controllers (the load balancer allocator, the
// local-path provisioner), as kube-controller-manager's Lease does for its.
const controllersLease = "skiff-server-controllers"

// leading runs run on this server only while it holds controllersLease;
// on a single server it runs at once. Losing the Lease ends the process
// (done), as upstream's controller manager does: controllers that may
// race a new leader must not run on.
func (s *Server) leading(ctx context.Context, client kubernetes.Interface, done chan<- error, run func(context.Context) error) {
	if !s.clustered {
		go func() { done <- run(ctx) }()
		return
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metaKubeSystem(controllersLease),
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: s.memberName()},
	}
	go leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock: lock, Name: controllersLease, ReleaseOnCancel: true,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				s.progress("running the cluster's Skiff controllers (this server holds the %s Lease)", controllersLease)
				done <- run(ctx)
			},
			OnStoppedLeading: func() {
				if ctx.Err() == nil {
					done <- errLostLease
				}
			},
		},
	})
}

var errLostLease = leaseError(controllersLease)

type leaseError string

func (e leaseError) Error() string {
	return "lost the " + string(e) + " Lease (the API was unreachable for longer than its renew deadline); restart to rejoin the election"
}

func metaKubeSystem(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem}
}
