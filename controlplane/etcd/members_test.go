package etcd

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/skiffnet/skiff/controlplane/pki"
)

// freePort returns a port p with p and p+1 free on loopback (client and
// peer), as far as can be known.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no two free ports in a row")
	return 0
}

// TestLearnerJoinsAndIsPromoted runs two real members on loopback: the
// second is added as a learner, starts from the first's member list, is
// promoted once in sync, and both then list as healthy voters.
func TestLearnerJoinsAndIsPromoted(t *testing.T) {
	b, err := pki.Ensure(filepath.Join(t.TempDir(), "tls"), pki.Names{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	files := TLSFiles{Cert: b.Etcd.CertPath, Key: b.Etcd.KeyPath, CA: b.EtcdCA.CertPath}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	p1 := freePort(t)
	first, err := Start(ctx, Config{DataDir: t.TempDir(), ClientPort: p1, Cluster: &ClusterConfig{Name: "one", Address: "127.0.0.1", TLS: files}})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	m, err := OpenMembers(first.Endpoint(), &files)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	p2 := freePort(t)
	second := &ClusterConfig{Name: "two", Address: "127.0.0.1", TLS: files}
	id, initial, err := m.AddLearner(ctx, second.Name, second.PeerURL(p2))
	if err != nil {
		t.Fatal(err)
	}
	second.Initial = initial
	e2, err := Start(ctx, Config{DataDir: t.TempDir(), ClientPort: p2, Cluster: second})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	for {
		err := m.Promote(ctx, id)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrNotInSync) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var list []Member
	for ctx.Err() == nil {
		list, err = m.List(ctx)
		if err == nil && len(list) == 2 && list[0].Healthy && list[1].Healthy && !list[1].Learner {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(list) != 2 || list[0].Name != "one" || list[1].Name != "two" || !list[0].Leader || list[1].Learner {
		t.Fatalf("members %+v: want one (leader) and two (voter), both healthy", list)
	}
	if err := m.Remove(ctx, "three"); err == nil {
		t.Error("removing a member that does not exist succeeded")
	}
}
