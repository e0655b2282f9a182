package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// testRollingUpdate is issue 3's acceptance point 2: set image to v2 rolls
// within maxSurge 1 / maxUnavailable 0, undo returns to v1, and old pods run
// their preStop hook (2 s) and are gone within the 10 s grace period.
func testRollingUpdate(t *testing.T, c *Cluster) {
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	term := watchTerminations(watchCtx, t, c, "app=echo")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	violations := make(chan string, 100)
	go func() {
		for ctx.Err() == nil {
			if v := surgeViolation(ctx, c); v != "" {
				select {
				case violations <- v:
				default:
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	for _, v := range []string{"v2", "v1"} {
		if v == "v2" {
			c.MustKubectl("set", "image", "deployment/echo", "echo=skiff.local/echo:v2")
		} else {
			c.MustKubectl("rollout", "undo", "deployment/echo")
		}
		c.WaitRollout(t, "deployment/echo")
		for _, p := range c.Pods(t, "app=echo") {
			if p.DeletionTimestamp != nil {
				continue
			}
			if out := c.MustKubectl("exec", p.Name, "--", "/echo", "-version"); strings.TrimSpace(out) != v {
				t.Errorf("%s runs %q, want %s", p.Name, out, v)
			}
		}
	}
	cancel()
	select {
	case v := <-violations:
		t.Errorf("rollout broke maxSurge 1 / maxUnavailable 0: %s", v)
	default:
	}
	// Rollouts finish when the new pods are available; wait for the old
	// ones to be gone before judging how long they took.
	if err := poll(30*time.Second, func() bool {
		for _, p := range c.Pods(t, "app=echo") {
			if p.DeletionTimestamp != nil {
				return false
			}
		}
		return true
	}); err != nil {
		t.Errorf("old pods still terminating 30 s after the rollouts")
	}
	time.Sleep(time.Second)
	for name, d := range term.durations() {
		if d < 2*time.Second || d > 13*time.Second {
			t.Errorf("%s took %v to stop; want the 2 s preStop hook and no more than the 10 s grace period", name, d)
		}
	}
	if len(term.durations()) < 6 {
		t.Errorf("saw %d pods stop, want 6 (3 per rollout)", len(term.durations()))
	}
}

// surgeViolation reports a moment at which the rollout went past maxSurge 1
// or below maxUnavailable 0 for 3 replicas. The surge is judged on the
// ReplicaSets' spec.replicas, the numbers the deployment controller bounds:
// the Deployment's status.replicas adds up ReplicaSet statuses that are
// updated one after the other, so it reads 5 for a moment even upstream.
func surgeViolation(ctx context.Context, c *Cluster) string {
	d, err := c.Client().AppsV1().Deployments("default").Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	if d.Status.AvailableReplicas < 3 {
		return "available below 3: " + strings.TrimSpace(d.Status.String())
	}
	rss, err := c.Client().AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
	if err != nil {
		return ""
	}
	total, desc := int32(0), ""
	for _, rs := range rss.Items {
		if rs.Spec.Replicas != nil {
			total += *rs.Spec.Replicas
			desc += fmt.Sprintf(" %s=%d", rs.Name, *rs.Spec.Replicas)
		}
	}
	if total > 4 {
		return "ReplicaSets want more than 4 pods:" + desc
	}
	return ""
}

// testNodeLoss is issue 3's acceptance point 6.
func testNodeLoss(t *testing.T, c *Cluster) {
	victim := c.node(c.Pods(t, "app=echo")[0].Spec.NodeName)
	victim.StopAgent()
	defer victim.StartAgent()
	start := time.Now()
	if err := poll(60*time.Second, func() bool {
		n, err := c.Client().CoreV1().Nodes().Get(context.Background(), victim.Name, metav1.GetOptions{})
		return err == nil && !nodeReady(n)
	}); err != nil {
		t.Fatalf("node %s still Ready 60 s after its agent stopped", victim.Name)
	}
	t.Logf("%s NotReady after %v", victim.Name, time.Since(start).Round(time.Second))
	err := poll(90*time.Second, func() bool {
		ready := 0
		for _, p := range c.Pods(t, "app=echo") {
			if p.DeletionTimestamp == nil && p.Spec.NodeName != victim.Name && podReady(&p) {
				ready++
			}
		}
		return ready == 3
	})
	if err != nil {
		out, _ := c.Kubectl("get", "pods", "-o", "wide")
		t.Fatalf("pods were not recreated on the other nodes: %v\n%s", err, out)
	}
}

// terminations records, per pod, the time from its deletion to its removal.
type terminations struct {
	mu    sync.Mutex
	start map[string]time.Time
	took  map[string]time.Duration
}

func (r *terminations) durations() map[string]time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]time.Duration{}
	for k, v := range r.took {
		out[k] = v
	}
	return out
}

func watchTerminations(ctx context.Context, t *testing.T, c *Cluster, selector string) *terminations {
	r := &terminations{start: map[string]time.Time{}, took: map[string]time.Duration{}}
	w, err := c.Client().CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			r.mu.Lock()
			switch {
			case ev.Type == watch.Deleted:
				if s, ok := r.start[p.Name]; ok {
					r.took[p.Name] = time.Since(s)
				}
			case p.DeletionTimestamp != nil:
				if _, ok := r.start[p.Name]; !ok {
					r.start[p.Name] = time.Now()
				}
			}
			r.mu.Unlock()
		}
	}()
	return r
}
