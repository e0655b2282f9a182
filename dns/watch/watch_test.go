package watch_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiffnet/skiff/dns/dnstest"
	"github.com/skiffnet/skiff/dns/records"
	"github.com/skiffnet/skiff/dns/server"
	"github.com/skiffnet/skiff/dns/watch"
)

const ns = "ns1"

func name(s string) string { return s + "." + ns + ".svc.cluster.local." }

// start serves the fixture set from a fake API server through the watcher.
func start(t *testing.T) (*fake.Clientset, *server.Handler) {
	t.Helper()
	set := dnstest.Fixtures(ns)
	var objs []runtime.Object
	for _, s := range set.Services {
		objs = append(objs, s)
	}
	for _, s := range set.Slices {
		objs = append(objs, s)
	}
	client := fake.NewClientset(objs...)
	empty, err := records.Build(records.Options{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := server.NewHandler(empty, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	factory := informers.NewSharedInformerFactory(client, 0)
	go func() { done <- watch.Run(ctx, factory, records.Options{}, h, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		factory.Shutdown()
	})
	return client, h
}

// answer returns the rcode and sorted A records of name.
func answer(h *server.Handler, qname string) (int, []string) {
	m := new(dns.Msg)
	m.SetQuestion(qname, dns.TypeA)
	req, _ := m.Pack()
	r := new(dns.Msg)
	if err := r.Unpack(h.Answer(context.Background(), req, make([]byte, 0, 4096), true)); err != nil {
		return -1, nil
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	slices.Sort(ips)
	return r.Rcode, ips
}

// eventually waits up to 1 s, the bound, for qname to answer want
// (nil: NXDOMAIN), and reports how long it took.
func eventually(t *testing.T, h *server.Handler, qname string, want []string) time.Duration {
	t.Helper()
	return eventuallyWithin(t, time.Second, h, qname, want)
}

// eventuallyWithin is eventually with another limit: a burst of 200 creates
// through the fake clientset can take seconds to reach the informer on a
// loaded CI machine, and the burst test is about batching, not latency.
func eventuallyWithin(t *testing.T, limit time.Duration, h *server.Handler, qname string, want []string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		rcode, got := answer(h, qname)
		if want == nil && rcode == dns.RcodeNameError || want != nil && rcode == dns.RcodeSuccess && slices.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s after %v: %s %q, want %q", qname, limit, dns.RcodeToString[rcode], got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAnswersFollowEndpoints(t *testing.T) {
	client, h := start(t)
	ctx := context.Background()
	slices_ := client.DiscoveryV1().EndpointSlices(ns)

	eventually(t, h, name("db"), []string{"10.244.1.5", "10.244.2.6"})

	// 10.244.3.7 becomes ready: it joins the headless answer.
	s, err := slices_.Get(ctx, "db-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := true
	s.Endpoints[2].Conditions.Ready = &ready
	if _, err := slices_.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := eventually(t, h, name("db"), []string{"10.244.1.5", "10.244.2.6", "10.244.3.7"})
	t.Logf("endpoint ready: answered after %v", d)
	eventually(t, h, "10-244-3-7."+name("db"), []string{"10.244.3.7"})

	// Every endpoint goes not ready: the name is gone (NXDOMAIN).
	notReady := false
	for i := range s.Endpoints {
		s.Endpoints[i].Conditions.Ready = &notReady
	}
	if _, err := slices_.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d = eventually(t, h, name("db"), nil)
	t.Logf("endpoints not ready: NXDOMAIN after %v", d)
	eventually(t, h, "db-0."+name("db"), nil)

	// The empty Service's only endpoint becomes ready: the name appears.
	e, err := slices_.Get(ctx, "empty-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.Endpoints[0].Conditions.Ready = &ready
	if _, err := slices_.Update(ctx, e, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, h, name("empty"), []string{"10.244.1.30"})

	// The slice is deleted: NXDOMAIN again.
	if err := slices_.Delete(ctx, "empty-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, h, name("empty"), nil)
}

func TestAnswersFollowServices(t *testing.T) {
	client, h := start(t)
	ctx := context.Background()
	svcs := client.CoreV1().Services(ns)
	eventually(t, h, name("web"), []string{"10.96.1.10"})

	if err := svcs.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, h, name("web"), nil)

	if _, err := svcs.Create(ctx, dnstest.Service(ns, "new", "10.96.5.5"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, h, name("new"), []string{"10.96.5.5"})
}

// A burst of changes is folded into few rebuilds, and the last one wins.
func TestBurst(t *testing.T) {
	client, h := start(t)
	ctx := context.Background()
	eventually(t, h, name("web"), []string{"10.96.1.10"})
	first := h.Table().SOA.Serial
	for i := range 200 {
		svc := dnstest.Service(ns, fmt.Sprintf("burst-%d", i), fmt.Sprintf("10.96.6.%d", i+1))
		if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventuallyWithin(t, 30*time.Second, h, name("burst-199"), []string{"10.96.6.200"})
	if n := h.Table().SOA.Serial - first; n > 50 {
		t.Errorf("%d rebuilds for a burst of 200 changes, want them batched", n)
	}
}
