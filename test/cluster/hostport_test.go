package cluster

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestHostPort is the upstream conformance test "HostPort validates that
// there is no conflict between pods with same hostPort but different hostIP
// and protocol", checked from the node's own network namespace (where a
// hostNetwork pod runs): three pods on one node share hostPort 54323, told
// apart by hostIP (127.0.0.1, the node address) and protocol (TCP, UDP).
// Then what upstream does not check: the node address's port is open to
// other machines, and it closes with its pod.
func TestHostPort(t *testing.T) {
	c := Start(t, Options{Nodes: 2, WaitReady: true})
	n := c.Nodes[0]
	const port = 54323
	pod := func(name, hostIP string, proto corev1.Protocol, containerPort int32) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{
				NodeName: n.Name, TerminationGracePeriodSeconds: new(int64),
				Containers: []corev1.Container{{
					Name: "echo", Image: "skiff.local/echo:v1", ImagePullPolicy: corev1.PullIfNotPresent,
					Env:   []corev1.EnvVar{{Name: "POD_NAME", Value: name}},
					Ports: []corev1.ContainerPort{{ContainerPort: containerPort, HostPort: port, HostIP: hostIP, Protocol: proto}},
					// Ready means listening: the checks below go at once.
					ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
						HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}},
				}},
			},
		}
	}
	ctx := context.Background()
	for _, p := range []*corev1.Pod{
		pod("pod1", "127.0.0.1", corev1.ProtocolTCP, 8080),
		pod("pod2", n.IP, corev1.ProtocolTCP, 8080),
		pod("pod3", n.IP, corev1.ProtocolUDP, 9001),
	} {
		if _, err := c.Client().CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"pod1", "pod2", "pod3"} {
		c.WaitPod(t, p, podReady)
	}
	echo := filepath.Join(filepath.Dir(c.Bin), "bin", "echo-v1")
	answer := func(out string, err error) string {
		if err != nil {
			return "error: " + strings.TrimSpace(out)
		}
		// `echo udp` prints "POD CLIENT" per answer.
		if f := strings.Fields(out); len(f) > 0 {
			return f[0]
		}
		return "nothing"
	}
	curlPod := func(args ...string) string {
		out, err := n.Exec("curl", append([]string{"-sS", "--max-time", "5", "-o", "/dev/null", "-D", "-"}, args...)...)
		if err != nil {
			return "error: " + strings.TrimSpace(out)
		}
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "X-Echo-Pod: "); ok {
				return v
			}
		}
		return "no X-Echo-Pod header in " + out
	}
	url := func(host string) string { return "http://" + host + ":54323/hostname" }

	// Upstream's three checks, from the node.
	if got := curlPod("--interface", n.IP, url("127.0.0.1")); got != "pod1" {
		t.Errorf("curl --interface %s %s answered by %q, want pod1", n.IP, url("127.0.0.1"), got)
	}
	if got := curlPod(url(n.IP)); got != "pod2" {
		t.Errorf("curl %s answered by %q, want pod2", url(n.IP), got)
	}
	if got := answer(n.Exec(echo, "udp", n.IP+":54323", "1")); got != "pod3" {
		t.Errorf("UDP to %s:54323 answered by %q, want pod3", n.IP, got)
	}
	// From loopback to loopback: portmap's SNAT and route_localnet.
	if got := curlPod(url("127.0.0.1")); got != "pod1" {
		t.Errorf("curl %s (from 127.0.0.1) answered by %q, want pod1", url("127.0.0.1"), got)
	}
	// From other machines the node address is open.
	if out, err := c.ClientExec("curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", url(n.IP)); err != nil || out != "200" {
		t.Errorf("curl %s from outside the cluster: %q %v", url(n.IP), out, err)
	}
	if got := answer(c.Nodes[1].Exec(echo, "udp", n.IP+":54323", "1")); got != "pod3" {
		t.Errorf("UDP to %s:54323 from %s answered by %q, want pod3", n.IP, c.Nodes[1].Name, got)
	}
	if out, err := c.Nodes[1].Exec("curl", "-sS", "--max-time", "3", url(n.IP)); err != nil {
		t.Errorf("curl %s from %s: %v %s", url(n.IP), c.Nodes[1].Name, err, out)
	}

	// The pod's rules leave with it: the port is closed, the other pods
	// keep theirs.
	if err := c.Client().CoreV1().Pods("default").Delete(ctx, "pod2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitGone(t, "pod2")
	// The API object can go a moment before the kubelet has torn the
	// sandbox down (CNI DEL, which removes the rules).
	var out string
	if err := poll(30*time.Second, func() bool {
		var err error
		out, err = n.Exec("curl", "-sS", "--max-time", "3", url(n.IP))
		return err != nil
	}); err != nil {
		t.Errorf("%s still answers 30 s after pod2 was deleted: %s", url(n.IP), out)
	}
	if got := curlPod("--interface", n.IP, url("127.0.0.1")); got != "pod1" {
		t.Errorf("after pod2 left, 127.0.0.1:54323 answered by %q, want pod1", got)
	}
}

// waitGone waits until the default namespace's pod name no longer exists.
func (c *Cluster) waitGone(t *testing.T, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 2*time.Minute, true,
		func(ctx context.Context) (bool, error) {
			_, err := c.Client().CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	if err != nil {
		t.Fatalf("pod %s not gone: %v", name, err)
	}
}
