package controlplane

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/test/harness"
)

// kubectlFunc runs one kubectl invocation against a server.
type kubectlFunc func(args ...string) (string, error)

// TestWorkloadsWithSkiffKubectl is acceptance 2 through `skiff kubectl`.
func TestWorkloadsWithSkiffKubectl(t *testing.T) {
	s := harness.NewServer(t)
	s.Start()
	exerciseWorkloads(t, s, s.Kubectl)
}

// TestWorkloadsWithUpstreamKubectl runs the same with a standalone upstream
// kubectl of the same minor version ($KUBECTL_BINARY, built by `make build`).
func TestWorkloadsWithUpstreamKubectl(t *testing.T) {
	bin := os.Getenv("KUBECTL_BINARY")
	if bin == "" {
		t.Fatal("KUBECTL_BINARY is not set: run `make test`, which builds _output/kubectl from k8s.io/kubernetes/cmd/kubectl")
	}
	s := harness.NewServer(t)
	s.Start()
	exerciseWorkloads(t, s, func(args ...string) (string, error) {
		return harness.Run(bin, append([]string{"--kubeconfig", s.Kubeconfig()}, args...)...)
	})
}

func exerciseWorkloads(t *testing.T, s *harness.Server, kubectl kubectlFunc) {
	ctx := context.Background()
	must := func(args ...string) string {
		t.Helper()
		out, err := kubectl(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	must("apply", "-f", "testdata/workloads.yaml")
	client := s.Client()

	waitFor(t, "3 Pending pods of one ReplicaSet", func() (bool, error) {
		rs, err := client.AppsV1().ReplicaSets("shop").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(rs.Items) != 1 {
			return false, err
		}
		pods, err := client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) != 3 {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodPending || p.OwnerReferences[0].Name != rs.Items[0].Name {
				return false, nil
			}
		}
		return true, nil
	})
	checkServiceAllocation(t, s)
	waitFor(t, "StatefulSet pod db-0 and the Job's pod", func() (bool, error) {
		_, err := client.CoreV1().Pods("shop").Get(ctx, "db-0", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pods, err := client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "job-name=once"})
		return err == nil && len(pods.Items) == 1, err
	})
	must("get", "cronjob/nightly", "daemonset/agent", "-n", "shop")

	must("scale", "deployment/web", "--replicas=5", "-n", "shop")
	waitFor(t, "5 pods after scale (before any rollout, so no surge pods count)", func() (bool, error) {
		d, err := client.AppsV1().Deployments("shop").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.Replicas == 5, err
	})

	// Rollouts as upstream: set image makes revision 2, undo returns to the first template.
	must("set", "image", "deployment/web", "web=skiff.local/echo:v2", "-n", "shop")
	waitFor(t, "revision 2 in rollout history", func() (bool, error) {
		out, err := kubectl("rollout", "history", "deployment/web", "-n", "shop")
		return err == nil && strings.Contains(out, "\n2 "), nil
	})
	must("rollout", "undo", "deployment/web", "-n", "shop")
	waitFor(t, "undo back to echo:v1", func() (bool, error) {
		d, err := client.AppsV1().Deployments("shop").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Spec.Template.Spec.Containers[0].Image == "skiff.local/echo:v1", err
	})

	out := must("create", "deployment", "dry", "--image=skiff.local/echo:v1", "--dry-run=client", "-o", "yaml")
	if !strings.Contains(out, "kind: Deployment") || !strings.Contains(out, "name: dry") {
		t.Errorf("dry-run output is not the Deployment:\n%s", out)
	}
	if _, err := client.AppsV1().Deployments("default").Get(ctx, "dry", metav1.GetOptions{}); err == nil {
		t.Error("--dry-run=client created the Deployment")
	}
	if out := must("explain", "deployment.spec.replicas"); !strings.Contains(out, "replicas") || !strings.Contains(out, "integer") {
		t.Errorf("explain output lacks the field's doc:\n%s", out)
	}
	if out := must("auth", "can-i", "create", "deployments"); strings.TrimSpace(out) != "yes" {
		t.Errorf("admin auth can-i = %q, want yes", out)
	}
	out, _ = kubectl("auth", "can-i", "create", "pods", "--as=system:serviceaccount:shop:default")
	if strings.TrimSpace(out) != "no" {
		t.Errorf("default service account can-i create pods = %q, want no", out)
	}
}

func checkServiceAllocation(t *testing.T, s *harness.Server) {
	ctx := context.Background()
	svcCIDR := netip.MustParsePrefix("10.96.0.0/12")
	web, err := s.Client().CoreV1().Services("shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip, err := netip.ParseAddr(web.Spec.ClusterIP); err != nil || !svcCIDR.Contains(ip) {
		t.Errorf("ClusterIP %q not in %s", web.Spec.ClusterIP, svcCIDR)
	}
	np, err := s.Client().CoreV1().Services("shop").Get(ctx, "web-nodeport", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if port := np.Spec.Ports[0].NodePort; port < 30000 || port > 32767 {
		t.Errorf("nodePort %d not in 30000-32767", port)
	}
	if np.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("type = %s", np.Spec.Type)
	}
}
