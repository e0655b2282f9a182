// Package podstartup measures how fast a Skiff node starts pods: the time
// from creating a Pod to its Ready condition, for 30 pods whose image is
// already on the node, and the agent's memory with them running.
//
//	bench/podstartup/run.sh      (as root, after make build)
package podstartup

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/skiffnet/skiff/test/cluster"
)

const pods = 30

func BenchmarkPodStartup(b *testing.B) {
	c := cluster.Start(b, cluster.Options{Nodes: 1, WaitReady: true})
	client := c.Client()
	ctx := context.Background()
	var all []time.Duration
	for round := 0; b.Loop(); round++ {
		created := map[string]time.Time{}
		ready := map[string]time.Duration{}
		var mu sync.Mutex
		w, err := client.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{LabelSelector: "bench=podstartup"})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok || ev.Type == watch.Deleted || !isReady(p) {
					continue
				}
				mu.Lock()
				if _, seen := ready[p.Name]; !seen {
					if t0, ok := created[p.Name]; ok {
						ready[p.Name] = time.Since(t0)
					}
				}
				n := len(ready)
				mu.Unlock()
				if n == pods {
					return
				}
			}
		}()
		for i := range pods {
			name := fmt.Sprintf("start-%d-%d", round, i)
			mu.Lock()
			created[name] = time.Now()
			mu.Unlock()
			if _, err := client.CoreV1().Pods("default").Create(ctx, pod(name), metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			b.Fatalf("only %d of %d pods Ready after 3 minutes", len(ready), pods)
		}
		w.Stop()
		b.StopTimer()
		for _, d := range ready {
			all = append(all, d)
		}
		rss := agentRSS(c)
		b.ReportMetric(float64(rss)/(1<<20), "agent-RSS-MiB")
		if err := client.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)},
			metav1.ListOptions{LabelSelector: "bench=podstartup"}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(all)
	b.ReportMetric(pct(all, 50).Seconds()*1000, "p50-ms")
	b.ReportMetric(pct(all, 99).Seconds()*1000, "p99-ms")
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, len(d)*p/100)]
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func pod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": "podstartup"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "echo", Image: "skiff.local/echo:v1", ImagePullPolicy: corev1.PullIfNotPresent,
				Args: []string{"-tcp", "", "-udp", ""},
			}},
		},
	}
}

// agentRSS is the resident memory of the node's agent process (the skiff
// process in the node's cgroup that runs `agent`).
func agentRSS(c *cluster.Cluster) int64 {
	procs, _ := os.ReadFile(c.Nodes[0].CgroupDir() + "/cgroup.procs")
	var total int64
	for _, pid := range strings.Fields(string(procs)) {
		cmd, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		if !strings.Contains(string(cmd), "agent\x00--server") {
			continue
		}
		status, _ := os.ReadFile("/proc/" + pid + "/status")
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}
