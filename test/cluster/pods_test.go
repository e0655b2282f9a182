package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// echoReply is what the echo server answers with.
type echoReply struct {
	Hostname, Pod, Namespace, Node, Client string
}

// TestDeploymentAcrossNodes is issue 3's first acceptance point: a 3-replica
// Deployment is Ready across nodes, and logs, exec and port-forward work
// through the kubelet API.
func TestDeploymentAcrossNodes(t *testing.T) {
	c := Start(t, Options{Nodes: 3, WaitReady: true})
	c.MustKubectl("apply", "-f", "testdata/echo.yaml")
	c.WaitRollout(t, "deployment/echo")
	pods := c.Pods(t, "app=echo")
	nodes := map[string]bool{}
	for _, p := range pods {
		nodes[p.Spec.NodeName] = true
		if p.Status.PodIP == "" || p.Status.HostIP == "" {
			t.Errorf("%s: podIP %q hostIP %q", p.Name, p.Status.PodIP, p.Status.HostIP)
		}
		if p.Status.QOSClass != corev1.PodQOSBestEffort {
			t.Errorf("%s: QoS %s, want BestEffort", p.Name, p.Status.QOSClass)
		}
	}
	if len(pods) != 3 || len(nodes) != 3 {
		t.Fatalf("%d pods on %d nodes, want 3 on 3", len(pods), len(nodes))
	}
	wide := c.MustKubectl("get", "pods", "-o", "wide")
	for _, p := range pods {
		if !strings.Contains(wide, p.Status.PodIP) || !strings.Contains(wide, p.Spec.NodeName) {
			t.Errorf("get pods -o wide lacks %s's IP or node:\n%s", p.Name, wide)
		}
	}
	p := pods[0]
	// From the pod's own node, the echo server answers with its identity.
	out, err := nodeByName(c, p.Spec.NodeName).Exec("curl", "-s", "--max-time", "5", "http://"+p.Status.PodIP+":8080/")
	if err != nil {
		t.Fatal(err)
	}
	var r echoReply
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Pod != p.Name || r.Node != p.Spec.NodeName {
		t.Errorf("echo reply %q (err %v), want pod %s on %s", out, err, p.Name, p.Spec.NodeName)
	}
	if out := c.MustKubectl("logs", p.Name); !strings.Contains(out, "listening") {
		t.Errorf("kubectl logs: %q", out)
	}
	if out := c.MustKubectl("exec", p.Name, "--", "/echo", "-version"); !strings.Contains(out, "v1") {
		t.Errorf("kubectl exec: %q", out)
	}
	checkPortForward(t, c, p.Name)

	t.Run("RollingUpdate", func(t *testing.T) { testRollingUpdate(t, c) })
	t.Run("NodeLoss", func(t *testing.T) { testNodeLoss(t, c) })
}

func checkPortForward(t *testing.T, c *Cluster, pod string) {
	cmd, err := command(c.Infra, "", c.Bin, "kubectl", "--kubeconfig", c.Kubeconfig(), "port-forward", "pod/"+pod, "18080:8080")
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	client := &http.Client{Transport: &http.Transport{DialContext: dialer(c.Infra)}, Timeout: 5 * time.Second}
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) {
			resp, err := client.Get("http://127.0.0.1:18080/")
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			return resp.StatusCode == 200, nil
		})
	if err != nil {
		t.Errorf("port-forward to %s never answered: %v", pod, err)
	}
}

func nodeByName(c *Cluster, name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	panic(fmt.Sprintf("no node %s", name))
}

// Pods lists the default namespace's pods matching selector.
func (c *Cluster) Pods(t testing.TB, selector string) []corev1.Pod {
	t.Helper()
	list, err := c.Client().CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}
