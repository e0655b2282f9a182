package controlplane

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/test/harness"
)

func TestBadManifestsGetUpstreamErrors(t *testing.T) {
	s := harness.NewServer(t)
	s.Start()
	cases := []struct {
		name, manifest string
		want           []string
	}{
		{"invalid YAML", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [broken\n", []string{"yaml"}},
		{"unknown field", deployment("spec:\n  replicass: 3\n"), []string{`unknown field "spec.replicass"`}},
		{"negative replicas", deployment("spec:\n  replicas: -1\n"), []string{"spec.replicas", "must be greater than or equal to 0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := kubectlStdin(s, c.manifest, "apply", "-f", "-")
			if err == nil {
				t.Fatalf("apply succeeded:\n%s", out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("error does not mention %q:\n%s", w, out)
				}
			}
		})
	}
	// Through client-go the same request is an HTTP 422 naming the field.
	replicas := int32(-1)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: appsv1.DeploymentSpec{Replicas: &replicas}}
	_, err := s.Client().AppsV1().Deployments("default").Create(context.Background(), d, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.replicas") {
		t.Errorf("create replicas=-1: got %v, want 422 Invalid naming spec.replicas", err)
	}
}

func TestServerFailsWithOneLineCause(t *testing.T) {
	bin := harness.Binary(t)
	harness.RequireRoot(t) // root can write almost anywhere; /proc is the exception we rely on
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unwritable data dir", []string{"--data-dir", "/proc/skiff-cannot-write-here"}, "--data-dir"},
		{"port in use", []string{"--data-dir", harness.TempDir(t, "busy"), "--https-port", strconv.Itoa(busy)}, "--https-port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"server", "--disable-agent"}, c.args...)...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("skiff server succeeded:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "skiff: ") || !strings.Contains(last, c.want) {
				t.Errorf("last line %q should be a one-line cause naming %s; output:\n%s", last, c.want, out)
			}
			for _, l := range lines[:len(lines)-1] {
				if !strings.HasPrefix(l, "skiff server: ") {
					t.Errorf("unexpected output line %q", l)
				}
			}
		})
	}
}

func deployment(spec string) string {
	return "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\n" + spec
}

func kubectlStdin(s *harness.Server, stdin string, args ...string) (string, error) {
	cmd := exec.Command(s.Bin, append([]string{"kubectl", "--kubeconfig", s.Kubeconfig()}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
