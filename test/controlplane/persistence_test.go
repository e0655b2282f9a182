package controlplane

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/skiffnet/skiff/test/harness"
)

// seed creates n ConfigMaps and returns their UIDs by name.
func seed(t *testing.T, client kubernetes.Interface, prefix string, n int) map[string]types.UID {
	t.Helper()
	uids := map[string]types.UID{}
	for i := range n {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i)}, Data: map[string]string{"i": strconv.Itoa(i)}}
		got, err := client.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids[got.Name] = got.UID
	}
	return uids
}

func expectObjects(t *testing.T, client kubernetes.Interface, uids map[string]types.UID) {
	t.Helper()
	for name, uid := range uids {
		got, err := client.CoreV1().ConfigMaps("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got.UID != uid {
			t.Errorf("%s: uid %s, want %s", name, got.UID, uid)
		}
	}
}

func TestRestartKeepsObjects(t *testing.T) {
	s := harness.NewServer(t)
	s.Start()
	uids := seed(t, s.Client(), "keep", 20)
	token := s.MustKubectl("get", "secret", "-n", "kube-system", "-o", "name")
	s.Stop()
	s.Start()
	expectObjects(t, s.Client(), uids)
	if again := s.MustKubectl("get", "secret", "-n", "kube-system", "-o", "name"); again != token {
		t.Errorf("restart changed the bootstrap token secrets:\n%s\nvs\n%s", token, again)
	}
}

func TestSnapshotSaveRestore(t *testing.T) {
	s := harness.NewServer(t)
	s.Start()
	uids := seed(t, s.Client(), "snap", 20)
	file := filepath.Join(harness.TempDir(t, "snap"), "backup.db")
	if out, err := harness.Run(s.Bin, "etcd-snapshot", "save", file, "--data-dir", s.DataDir); err != nil || !strings.Contains(out, "saved snapshot") {
		t.Fatalf("save: %v\n%s", err, out)
	}
	s.Stop()

	restored := harness.NewServer(t)
	if out, err := harness.Run(s.Bin, "etcd-snapshot", "restore", file, "--data-dir", restored.DataDir,
		"--etcd-port", strconv.Itoa(restored.EtcdPort)); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	restored.Start()
	expectObjects(t, restored.Client(), uids)

	// Restoring over an existing data dir must refuse rather than overwrite.
	if out, err := harness.Run(s.Bin, "etcd-snapshot", "restore", file, "--data-dir", restored.DataDir); err == nil {
		t.Errorf("restore into a used data dir succeeded:\n%s", out)
	}
}

// TestExternalEtcdCluster runs three etcd members in this test process on
// loopback and a server on them; with one member stopped, writes still work.
func TestExternalEtcdCluster(t *testing.T) {
	base := harness.FreePorts(t, 6)
	dir := harness.TempDir(t, "etcd")
	var initial []string
	for i := range 3 {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, base+2*i+1))
	}
	members := make([]*embed.Etcd, 3)
	stops := make([]func(), 3)
	var endpoints []string
	for i := range 3 {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", base+2*i)}
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", base+2*i+1)}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Fatal(err)
		}
		stop := sync.OnceFunc(e.Close) // Close panics when called twice
		t.Cleanup(stop)
		members[i] = e
		stops[i] = stop
		endpoints = append(endpoints, client.String())
	}
	for _, m := range members {
		select {
		case <-m.Server.ReadyNotify():
		case <-time.After(time.Minute):
			t.Fatal("etcd cluster not ready")
		}
	}
	s := harness.NewServer(t, "--etcd-servers", strings.Join(endpoints, ","))
	s.Start()
	before := seed(t, s.Client(), "quorum", 5)
	stops[2]()
	after := seed(t, s.Client(), "degraded", 5)
	expectObjects(t, s.Client(), before)
	expectObjects(t, s.Client(), after)
}
