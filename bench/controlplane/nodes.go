package main

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// leaseDuration and renewEvery match a kubelet's defaults: the node lifecycle
// controller sees a renewed Lease as the node's heartbeat.
const (
	leaseDuration = 40
	renewEvery    = 10 * time.Second
)

// fakeNodes are Node objects with no agent behind them. They look like
// healthy nodes to the scheduler as long as their Leases are renewed, which
// is what keeps the node lifecycle controller from tainting them
// node.kubernetes.io/unreachable halfway through a measurement.
type fakeNodes struct {
	client kubernetes.Interface
	names  []string
}

func nodeName(i int) string { return fmt.Sprintf("bench-node-%03d", i) }

// createFakeNodes creates n Ready nodes with 8 CPUs, 32Gi and 110 pods each,
// and a Lease per node.
func createFakeNodes(ctx context.Context, client kubernetes.Interface, n int) (*fakeNodes, error) {
	f := &fakeNodes{client: client}
	for i := range n {
		name := nodeName(i)
		if err := f.createNode(ctx, name); err != nil {
			return nil, err
		}
		if err := f.createLease(ctx, name); err != nil {
			return nil, err
		}
		f.names = append(f.names, name)
	}
	return f, nil
}

func (f *fakeNodes) createNode(ctx context.Context, name string) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	now := metav1.Now()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			corev1.LabelHostname: name, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
		}},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "BenchFakeNode",
				LastHeartbeatTime: now, LastTransitionTime: now,
			}},
		},
	}
	created, err := f.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	// The Node registry keeps status on create; set it explicitly if a
	// future version stops doing so, or the scheduler sees zero capacity.
	if len(created.Status.Allocatable) == 0 {
		created.Status = node.Status
		if _, err := f.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("set status of node %s: %w", name, err)
		}
	}
	return nil
}

func (f *fakeNodes) createLease(ctx context.Context, name string) error {
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(name),
			LeaseDurationSeconds: ptr.To[int32](leaseDuration),
			RenewTime:            &metav1.MicroTime{Time: time.Now()},
		},
	}
	if _, err := f.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create lease of node %s: %w", name, err)
	}
	return nil
}

// waitSchedulable waits until every fake node is Ready and untainted. The
// TaintNodesByCondition admission plugin gives each new node the
// node.kubernetes.io/not-ready:NoSchedule taint, and the node lifecycle
// controller lifts it a few nodes at a time; timing the scheduler before that
// finished would measure it over fewer nodes than asked for.
func (f *fakeNodes) waitSchedulable(ctx context.Context) error {
	var left int
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		left, err = f.tainted(ctx)
		return err == nil && left == 0, err
	})
	if err != nil {
		return fmt.Errorf("%d of %d nodes still tainted or not Ready after 3m: %w", left, len(f.names), err)
	}
	return nil
}

// renew renews every node's Lease each renewEvery until ctx is done, as the
// kubelets would. Errors are reported on errs and do not stop the loop.
func (f *fakeNodes) renew(ctx context.Context, errs chan<- error) {
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	leases := f.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, name := range f.names {
			l, err := leases.Get(ctx, name, metav1.GetOptions{})
			if err == nil {
				l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
				_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
			}
			if err != nil && ctx.Err() == nil {
				select {
				case errs <- fmt.Errorf("renew lease of node %s: %w", name, err):
				default:
				}
			}
		}
	}
}

// tainted counts the fake nodes that carry a taint or are not Ready, so the
// report can show the scheduler had all of them to choose from.
func (f *fakeNodes) tainted(ctx context.Context) (int, error) {
	list, err := f.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("list nodes: %w", err)
	}
	n := 0
	for _, node := range list.Items {
		if len(node.Spec.Taints) > 0 || !ready(&node) {
			n++
		}
	}
	return n, nil
}

func ready(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
