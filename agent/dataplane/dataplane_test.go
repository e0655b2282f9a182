package dataplane

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestDNSWaitsForItsFirstSync: until the records come from synced caches
// the handler would answer NXDOMAIN for names that exist, so the data
// plane must not serve before newDNS's channel closes.
func TestDNSWaitsForItsFirstSync(t *testing.T) {
	client := fake.NewClientset(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Port: 443}}},
	})
	release := make(chan struct{})
	client.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		<-release
		return false, nil, nil
	})
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory := informers.NewSharedInformerFactory(client, 0)
	h, synced, err := newDNS(ctx, Config{ClusterDomain: "cluster.local", ResolvConf: resolv, Logger: slog.New(slog.DiscardHandler)}, factory, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-synced:
		t.Fatal("DNS reported synced before the Service list returned")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case <-synced:
	case <-time.After(10 * time.Second):
		t.Fatal("DNS not synced 10 s after the caches could sync")
	}
	q := new(dns.Msg)
	q.SetQuestion("kubernetes.default.svc.cluster.local.", dns.TypeA)
	req, _ := q.Pack()
	resp := new(dns.Msg)
	if err := resp.Unpack(h.Answer(ctx, req, make([]byte, 0, 512), false)); err != nil {
		t.Fatal(err)
	}
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Fatalf("after sync: rcode %s, %d answers; want the Service's address", dns.RcodeToString[resp.Rcode], len(resp.Answer))
	}
}
