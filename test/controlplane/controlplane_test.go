// Package controlplane tests `skiff server` and `skiff kubectl` end to end:
// the built binary, real client-go and kubectl, real etcd.
package controlplane

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/skiffnet/skiff/test/harness"
)

func TestAPIResourcesListsUpstreamGroups(t *testing.T) {
	s := harness.NewServer(t)
	s.Start()
	if !strings.Contains(s.Output(), "kubeconfig: "+s.Kubeconfig()) {
		t.Errorf("ready line does not name the kubeconfig %s:\n%s", s.Kubeconfig(), s.Output())
	}
	out := s.MustKubectl("api-resources", "-o", "wide")
	for _, group := range []string{" v1 ", "apps/v1", "batch/v1", "networking.k8s.io/v1", "discovery.k8s.io/v1",
		"rbac.authorization.k8s.io/v1", "storage.k8s.io/v1", "coordination.k8s.io/v1", "apiextensions.k8s.io/v1"} {
		if !strings.Contains(out, group) {
			t.Errorf("api-resources lacks %q", strings.TrimSpace(group))
		}
	}
	// The kubeconfig holds admin credentials: only its owner may read it.
	if st := fileMode(t, s.Kubeconfig()); st != 0o600 {
		t.Errorf("kubeconfig mode = %o, want 600", st)
	}
	if st := fileMode(t, s.DataDir+"/token"); st != 0o600 {
		t.Errorf("token mode = %o, want 600", st)
	}
	var v struct {
		ServerVersion struct{ GitVersion, Major, Minor string }
	}
	if err := json.Unmarshal([]byte(s.MustKubectl("version", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.ServerVersion.GitVersion, "v1.") || v.ServerVersion.Major != "1" || v.ServerVersion.Minor == "" {
		t.Errorf("server version = %+v, want a real v1.x release (set by the Makefile's ldflags)", v.ServerVersion)
	}
}

func TestNoAnonymousAccess(t *testing.T) {
	s := harness.NewServer(t)
	s.Start()
	out, err := harness.Run("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
		"-H", "Content-Type: application/json", "-d", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}`,
		"https://127.0.0.1:"+itoa(s.Port)+"/api/v1/namespaces")
	// The API server may close the connection right after its 401 (curl
	// exit 18, partial body); the status line is what this test is about.
	if err != nil && len(out) != 3 {
		t.Fatal(err)
	}
	if out != "401" {
		t.Errorf("anonymous POST got HTTP %s, want 401", out)
	}
}

func TestKubeDNSServiceExists(t *testing.T) {
	s := harness.NewServer(t)
	s.Start()
	svc, err := s.Client().CoreV1().Services("kube-system").Get(context.Background(), "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != "10.96.0.10" {
		t.Errorf("kube-dns ClusterIP = %s, want 10.96.0.10", svc.Spec.ClusterIP)
	}
}

// waitFor polls cond for up to a minute: controllers act asynchronously.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true,
		func(context.Context) (bool, error) { return cond() })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
