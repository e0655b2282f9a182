package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffnet/skiff/controlplane/pki"
)

// TestHAControlPlane is the HA issue's acceptance on three servers and two
// agents: bad joins are refused and leave the cluster alone; the server
// holding the etcd leader is SIGKILLed while 1,000 ConfigMaps are written
// and hey drives the Ingress, ClusterIP and NodePort of a node; every
// acknowledged write survives, the data plane loses nothing, no pod
// restarts; the killed server rejoins; with two of three down the API
// answers with an error instead of hanging, and the data plane serves on.
func TestHAControlPlane(t *testing.T) {
	c := Start(t, Options{Servers: 3, Nodes: 2, WaitReady: true})
	c.WaitMembers(t, 3)

	t.Run("BadJoins", func(t *testing.T) { c.badJoins(t) })
	c.WaitMembers(t, 3)

	w := c.DeployContinuityWorkload(t, c.Nodes[0])
	podsBefore := c.PodRestarts(t)
	leader := c.EtcdLeader(t)
	t.Logf("etcd leader: server %d (%s)", leader.Index+1, leader.IP)
	var res writeResult
	paths := c.UnderLoad(t, w, 8, 5*time.Second, func() {
		res = c.writeConfigMaps(t, 1000, 300, leader.Kill)
	})
	for _, p := range paths {
		t.Logf("%s: %d sent, %d failed, %d wrong, slowest %s", p.Path, p.Sent, p.Failed, p.Wrong, p.Slowest)
		if p.Sent == 0 || p.Failed+p.Wrong > 0 {
			t.Errorf("%s: %d of %d requests failed and %d were wrong while the etcd leader's server died", p.Path, p.Failed, p.Sent, p.Wrong)
		}
	}
	t.Logf("writes: %d acknowledged; first write after the kill took %s (writes failed over in %s)", len(res.acked), res.firstAfterKill, res.recovery)
	for _, a := range res.failures {
		t.Logf("after the kill: %s", a)
	}
	list, err := c.Client().CoreV1().ConfigMaps("ha-writes").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, cm := range list.Items {
		stored[cm.Name] = true
	}
	for _, name := range res.acked {
		if !stored[name] {
			t.Errorf("ConfigMap %s was acknowledged but is gone", name)
		}
	}
	if len(res.acked) != 1000 {
		t.Errorf("%d of 1000 writes acknowledged", len(res.acked))
	}
	// The kubelets renew their node Leases through the agents' load
	// balancers: they must carry on through another server.
	killedAt := time.Now().Add(-res.sinceKill)
	if err := poll(time.Minute, func() bool {
		for _, n := range c.Nodes {
			l, err := c.Client().CoordinationV1().Leases("kube-node-lease").Get(context.Background(), n.Name, metav1.GetOptions{})
			if err != nil || l.Spec.RenewTime == nil || !l.Spec.RenewTime.After(killedAt) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Errorf("a kubelet did not renew its node Lease within a minute of the server's death")
	}
	if after := c.PodRestarts(t); after != podsBefore {
		t.Errorf("pods restarted or were replaced while a server died:\nbefore:\n%s\nafter:\n%s", podsBefore, after)
	}

	t.Run("Rejoin", func(t *testing.T) {
		leader.Start()
		c.WaitMembers(t, 3)
	})

	t.Run("RestartJoined", func(t *testing.T) {
		s := c.Servers[1] // joined with --join: restarts from its own data
		s.Stop()
		s.Start()
		c.WaitMembers(t, 3)
	})

	t.Run("RemoveMember", func(t *testing.T) {
		gone := c.Servers[2]
		gone.Kill()
		name := gone.Hostname() + "-" + strings.ReplaceAll(gone.IP, ".", "-")
		s1 := c.Servers[0]
		if out, err := s1.Exec(c.Bin, "etcd-member", "remove", name, "--data-dir", s1.Dir); err != nil {
			t.Fatalf("etcd-member remove: %v\n%s", err, out)
		}
		c.WaitMembers(t, 2)
		// It comes back as a new member: an empty etcd dir and --join.
		if err := os.Rename(filepath.Join(gone.Dir, "etcd"), filepath.Join(gone.Dir, "etcd.removed")); err != nil {
			t.Fatal(err)
		}
		gone.Start()
		c.WaitMembers(t, 3)
	})

	// A snapshot from a server that is not the first, for Restore below.
	snap := filepath.Join(t.TempDir(), "snap.db")
	if out, err := c.Servers[1].Exec(c.Bin, "etcd-snapshot", "save", snap, "--data-dir", c.Servers[1].Dir); err != nil {
		t.Fatalf("etcd-snapshot save on server 2: %v\n%s", err, out)
	}

	t.Run("QuorumLost", func(t *testing.T) {
		survivor := c.Servers[(leader.Index+1)%3]
		for _, s := range c.Servers {
			if s != survivor {
				s.Kill()
			}
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := commandContext(ctx, survivor.NS, c.Bin, "kubectl", "--kubeconfig", filepath.Join(survivor.Dir, "kubeconfig"), "get", "configmaps", "-n", "ha-writes")
		took := time.Since(start)
		switch {
		case ctx.Err() != nil:
			t.Fatalf("with 2 of 3 servers down, kubectl hung for %s", took)
		case err == nil:
			t.Errorf("with 2 of 3 servers down, kubectl succeeded: %s", out)
		}
		t.Logf("with 2 of 3 servers down kubectl failed after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
		if _, err := c.ClientExec("curl", "-fsS", "--max-time", "5", "-H", "Host: demo.localhost", "http://"+w.Node.IP+"/"); err != nil {
			t.Errorf("with the control plane down, the Ingress stopped serving: %v", err)
		}
		if _, err := w.Node.Exec("curl", "-fsS", "--max-time", "5", "http://"+w.ClusterIP+"/"); err != nil {
			t.Errorf("with the control plane down, the ClusterIP stopped serving: %v", err)
		}
	})

	t.Run("Restore", func(t *testing.T) {
		for _, s := range c.Servers {
			s.Kill()
			if err := os.Rename(filepath.Join(s.Dir, "etcd"), filepath.Join(s.Dir, "etcd.before-restore")); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := output(c.Infra, "", c.Bin, "etcd-snapshot", "restore", snap, "--data-dir", c.Servers[0].Dir); err != nil {
			t.Fatalf("restore: %v\n%s", err, out)
		}
		for _, s := range c.Servers {
			s.Start() // the first with its restored member, the others joining it
		}
		c.WaitMembers(t, 3)
		n := strings.Count(c.MustKubectl("get", "configmaps", "-n", "ha-writes", "-o", "name"), "configmap/cm-")
		if n != 1000 {
			t.Errorf("after the restore, %d of the 1000 ConfigMaps are there", n)
		}
		c.waitNodes(true)
	})
}

type writeResult struct {
	acked []string
	// firstAfterKill: from the kill to the first acknowledged write;
	// recovery: the longest time between two acknowledged writes.
	firstAfterKill, recovery time.Duration
	// failures are the failed attempts after the kill: which server,
	// how long the attempt took, the error.
	failures []string
	// sinceKill: from the kill to the end of the writes.
	sinceKill time.Duration
}

// writeConfigMaps creates n ConfigMaps with sequential names, one at a
// time, as a client that knows every server would: on an error it retries
// the same name on the next server. kill runs before write killAt.
func (c *Cluster) writeConfigMaps(t testing.TB, n, killAt int, kill func()) writeResult {
	t.Helper()
	clients := make([]kubernetes.Interface, len(c.Servers))
	for i, s := range c.Servers {
		clients[i] = s.Client()
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ha-writes"}}
	if _, err := c.Client().CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	var res writeResult
	var killed, last time.Time
	cur := 0
	deadline := time.Now().Add(5 * time.Minute)
	for i := 0; i < n; i++ {
		if i == killAt {
			kill()
			killed = time.Now()
		}
		name := fmt.Sprintf("cm-%04d", i)
		for {
			if time.Now().After(deadline) {
				t.Fatalf("writes did not finish in 5 minutes; %d acknowledged", len(res.acked))
			}
			// A create whose raft proposal went to the dying leader is
			// lost and would wait for etcd's own 7 s timeout: give up
			// sooner and retry, as a client in a hurry does.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"i": fmt.Sprint(i)}}
			began := time.Now()
			_, err := clients[cur].CoreV1().ConfigMaps("ha-writes").Create(ctx, cm, metav1.CreateOptions{})
			cancel()
			if err == nil || apierrors.IsAlreadyExists(err) {
				break
			}
			if !killed.IsZero() {
				res.failures = append(res.failures, fmt.Sprintf("%s on server %d at +%s after %s: %v", name, cur+1,
					began.Sub(killed).Round(time.Millisecond), time.Since(began).Round(time.Millisecond), err))
			}
			cur = (cur + 1) % len(clients)
			time.Sleep(50 * time.Millisecond)
		}
		now := time.Now()
		if !last.IsZero() && now.Sub(last) > res.recovery {
			res.recovery = now.Sub(last)
		}
		if !killed.IsZero() && res.firstAfterKill == 0 {
			res.firstAfterKill = now.Sub(killed)
		}
		last = now
		res.acked = append(res.acked, name)
	}
	res.sinceKill = time.Since(killed)
	return res
}

// badJoins starts servers that must not join, and checks what they say.
func (c *Cluster) badJoins(t *testing.T) {
	good, err := pki.ParseJoinToken(c.Token())
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret := pki.JoinToken{CAHash: good.CAHash, ID: good.ID, Secret: "0123456789abcdef"}
	otherDir := t.TempDir()
	other, err := pki.Ensure(filepath.Join(otherDir, "tls"), pki.Names{})
	if err != nil {
		t.Fatal(err)
	}
	otherCluster := pki.JoinToken{CAHash: pki.CAHash(other.CA.Cert), ID: good.ID, Secret: good.Secret}
	cases := []struct {
		name, url, token, dataDir, want string
	}{
		{"WrongToken", c.Servers[0].URL(), wrongSecret.String(), t.TempDir(), "not this cluster's"},
		{"OtherClustersToken", c.Servers[0].URL(), otherCluster.String(), t.TempDir(), "does not match the join token"},
		{"OtherClustersDataDir", c.Servers[0].URL(), good.String(), otherDir, "belongs to another cluster"},
		{"NotASkiffServer", "https://" + clientIP + ":6443", good.String(), t.TempDir(), "wants a running skiff server"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := commandContext(ctx, c.Infra, c.Bin, "server", "--data-dir", tc.dataDir, "--advertise-address", bridgeIP,
				"--disable-agent", "--join", tc.url, "--token", tc.token)
			if err == nil || ctx.Err() != nil {
				t.Fatalf("the join did not fail at once (err %v, ctx %v):\n%s", err, ctx.Err(), out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("want %q in what the server said:\n%s", tc.want, out)
			}
			if _, err := os.Stat(filepath.Join(tc.dataDir, "etcd")); err == nil {
				t.Errorf("a refused join left an etcd member in %s", tc.dataDir)
			}
		})
	}
}
