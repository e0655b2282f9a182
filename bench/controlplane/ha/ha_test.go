// Package ha benchmarks a multi-server control plane against a single
// server in the same run: ConfigMap create and get latency (one request at
// a time, so each is an idle server's latency) on one server and on three
// (every write then waits for a quorum of etcd members), and the failover
// time: the server holding the etcd leader is SIGKILLed and a writer that
// knows every server retries on the survivors; the figure is the time from
// the kill to the first acknowledged write. TRIALS sets the failover
// trials (default 10), OPS the creates and gets per cluster (default 300).
package ha

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	testcluster "github.com/skiffnet/skiff/test/cluster"
)

func env(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func BenchmarkControlPlane(b *testing.B) {
	trials, ops := env("TRIALS", 10), env("OPS", 300)
	single := testcluster.Start(b, testcluster.Options{NoNodes: true})
	rc := single.RESTConfig()
	rc.QPS, rc.Burst = 1000, 1000
	one := latency(b, kubernetes.NewForConfigOrDie(rc), ops)
	triple := testcluster.Start(b, testcluster.Options{Servers: 3, NoNodes: true})
	triple.WaitMembers(b, 3)
	three := latency(b, triple.Servers[0].Client(), ops)

	var failover []time.Duration
	for i := range trials {
		took, leader := failOver(b, triple)
		failover = append(failover, took)
		b.Logf("trial %d: killed server %d (etcd leader); first write acknowledged after %s", i+1, leader.Index+1, took.Round(time.Millisecond))
		leader.Start()
		triple.WaitMembers(b, 3)
	}
	fmt.Println()
	fmt.Printf("%-28s %12s %12s\n", "ConfigMap, one at a time", "1 server", "3 servers")
	fmt.Printf("%-28s %12s %12s\n", "create p50", ms(pct(one.create, 50)), ms(pct(three.create, 50)))
	fmt.Printf("%-28s %12s %12s\n", "create p99", ms(pct(one.create, 99)), ms(pct(three.create, 99)))
	fmt.Printf("%-28s %12s %12s\n", "get p50", ms(pct(one.get, 50)), ms(pct(three.get, 50)))
	fmt.Printf("%-28s %12s %12s\n", "get p99", ms(pct(one.get, 99)), ms(pct(three.get, 99)))
	fmt.Printf("\nfailover, %d trials (SIGKILL of the etcd leader's server -> first acknowledged write on a survivor):\n", trials)
	fmt.Printf("  p50 %s  p99 %s  max %s   (goal < 5 s; per-attempt timeout %s)\n",
		ms(pct(failover, 50)), ms(pct(failover, 99)), ms(slices.Max(failover)), attemptTimeout)
}

type latencies struct{ create, get []time.Duration }

func latency(b *testing.B, client kubernetes.Interface, ops int) latencies {
	b.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench-latency"}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	cms := client.CoreV1().ConfigMaps("bench-latency")
	var l latencies
	for i := range ops {
		start := time.Now()
		_, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%04d", i)}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		l.create = append(l.create, time.Since(start))
	}
	for i := range ops {
		start := time.Now()
		if _, err := cms.Get(ctx, fmt.Sprintf("cm-%04d", i), metav1.GetOptions{}); err != nil {
			b.Fatal(err)
		}
		l.get = append(l.get, time.Since(start))
	}
	return l
}

// attemptTimeout: a create whose raft proposal went to the dying leader
// is lost and waits for etcd's own 7 s request timeout; a client in a
// hurry gives up sooner and retries elsewhere.
const attemptTimeout = time.Second

var seq int

// failOver kills the etcd leader's server and returns the time until a
// create succeeds on one of the others, tried in turn.
func failOver(b *testing.B, c *testcluster.Cluster) (time.Duration, *testcluster.Server) {
	b.Helper()
	leader := c.EtcdLeader(b)
	var survivors []kubernetes.Interface
	for _, s := range c.Servers {
		if s != leader {
			survivors = append(survivors, s.Client())
		}
	}
	leader.Kill()
	killed := time.Now()
	for i := 0; ; i++ {
		if time.Since(killed) > 2*time.Minute {
			b.Fatal("no write succeeded for 2 minutes after the kill")
		}
		seq++
		ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("failover-%05d", seq)}}
		_, err := survivors[i%len(survivors)].CoreV1().ConfigMaps("bench-latency").Create(ctx, cm, metav1.CreateOptions{})
		cancel()
		if err == nil || apierrors.IsAlreadyExists(err) {
			return time.Since(killed), leader
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(p/100*float64(len(s)) + 0.999999)
	return s[min(max(rank, 1), len(s))-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
