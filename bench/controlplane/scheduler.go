package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// createWorkers is how many pods the benchmark creates at once: enough that
// creation outpaces the scheduler, few enough not to starve it on 2 cores.
const createWorkers = 8

// schedulerResult is how long the scheduler took to bind every pod.
type schedulerResult struct {
	pods      int
	nodesUsed int           // distinct nodes the pods landed on
	created   time.Duration // first create → last create returned
	bound     time.Duration // first create → last pod seen with spec.nodeName
}

func (r schedulerResult) podsPerSecond() float64 { return float64(r.pods) / r.bound.Seconds() }

// boundCounter watches the pods of a namespace and closes done once want
// distinct pods have a node.
type boundCounter struct {
	mu    sync.Mutex
	bound map[string]string // pod → node
	want  int
	last  time.Time
	done  chan struct{}
}

func (b *boundCounter) observe(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, seen := b.bound[pod.Name]; seen {
		return
	}
	b.bound[pod.Name] = pod.Spec.NodeName
	if len(b.bound) == b.want {
		b.last = time.Now()
		close(b.done)
	}
}

// nodes is how many distinct nodes the pods were bound to.
func (b *boundCounter) nodes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	used := map[string]bool{}
	for _, n := range b.bound {
		used[n] = true
	}
	return len(used)
}

func (b *boundCounter) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.bound)
}

// measureScheduler creates pods in ns and times until all of them are bound.
func measureScheduler(ctx context.Context, client kubernetes.Interface, ns string, pods int) (schedulerResult, error) {
	r := schedulerResult{pods: pods}
	counter := &boundCounter{bound: map[string]string{}, want: pods, done: make(chan struct{})}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	informer := factory.Core().V1().Pods().Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    counter.observe,
		UpdateFunc: func(_, obj any) { counter.observe(obj) },
	}); err != nil {
		return r, fmt.Errorf("watch pods: %w", err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	factory.Start(watchCtx.Done())
	// Shutdown waits for the informers, which stop only once stopWatch ran.
	defer func() {
		stopWatch()
		factory.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return r, errors.New("pod watch did not sync")
	}

	start := time.Now()
	if err := createPods(ctx, client, ns, pods); err != nil {
		return r, err
	}
	r.created = time.Since(start)
	select {
	case <-counter.done:
		r.bound = counter.last.Sub(start)
		r.nodesUsed = counter.nodes()
		return r, nil
	case <-time.After(5 * time.Minute):
		return r, fmt.Errorf("only %d of %d pods bound after 5m", counter.count(), pods)
	case <-ctx.Done():
		return r, ctx.Err()
	}
}

func createPods(ctx context.Context, client kubernetes.Interface, ns string, pods int) error {
	next := make(chan int)
	errs := make(chan error, createWorkers)
	var wg sync.WaitGroup
	for range createWorkers {
		wg.Go(func() {
			for i := range next {
				if _, err := client.CoreV1().Pods(ns).Create(ctx, benchPod(i), metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create pod %d: %w", i, err)
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range pods {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err != nil {
		return err
	}
	return <-errs // nil once closed and empty
}

func benchPod(i int) *corev1.Pod {
	requests := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("10m"),
		corev1.ResourceMemory: resource.MustParse("16Mi"),
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-pod-%04d", i)},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "pause", Image: "registry.k8s.io/pause:3.10",
				Resources: corev1.ResourceRequirements{Requests: requests},
			}},
		},
	}
}

// createNamespace creates ns and waits for its default ServiceAccount, which
// admission requires before it accepts a pod.
func createNamespace(ctx context.Context, client kubernetes.Interface, ns string) error {
	if _, err := client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s has no default ServiceAccount after 1m: %w", ns, err)
	}
	return nil
}
