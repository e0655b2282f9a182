package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// GetPod returns the default namespace's pod name.
func (c *Cluster) GetPod(t testing.TB, name string) *corev1.Pod {
	t.Helper()
	p, err := c.Client().CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// WaitPod waits up to 3 minutes for the pod to satisfy cond, and on timeout
// fails with `kubectl describe` of it.
func (c *Cluster) WaitPod(t testing.TB, name string, cond func(*corev1.Pod) bool) {
	t.Helper()
	client := c.Client()
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 3*time.Minute, true,
		func(ctx context.Context) (bool, error) {
			p, err := client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			return err == nil && cond(p), nil
		})
	if err != nil {
		desc, _ := c.Kubectl("describe", "pod", name)
		t.Fatalf("pod %s: %v\n%s", name, err, desc)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitingReason holds when the pod's first container waits for one of reasons.
func waitingReason(reasons ...string) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		cs := p.Status.ContainerStatuses
		return len(cs) > 0 && cs[0].State.Waiting != nil && slices.Contains(reasons, cs[0].State.Waiting.Reason)
	}
}

// PodGet fetches path from the echo server in pod (port 8080) from the
// pod's own node, and returns the body.
func (c *Cluster) PodGet(t testing.TB, pod, path string) string {
	t.Helper()
	p := c.GetPod(t, pod)
	out, err := c.node(p.Spec.NodeName).Exec("curl", "-sS", "--max-time", "5", "http://"+p.Status.PodIP+":8080"+path)
	if err != nil {
		t.Errorf("GET %s from %s: %v", path, pod, err)
	}
	return out
}

// PodPut writes body to path through the echo server in pod.
func (c *Cluster) PodPut(t testing.TB, pod, path, body string) {
	t.Helper()
	p := c.GetPod(t, pod)
	if _, err := c.node(p.Spec.NodeName).Exec("curl", "-sSf", "--max-time", "5", "-X", "PUT", "--data-binary", body,
		"http://"+p.Status.PodIP+":8080"+path); err != nil {
		t.Fatalf("PUT %s to %s: %v", path, pod, err)
	}
}

func (c *Cluster) node(name string) *Node {
	if n := c.nodeOrNil(name); n != nil {
		return n
	}
	panic(fmt.Sprintf("no node %q in %s", name, strings.Join(c.nodeNames(), ",")))
}

// nodeOrNil is the node called name, or nil when the cluster has none.
func (c *Cluster) nodeOrNil(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func (c *Cluster) nodeNames() []string {
	var names []string
	for _, n := range c.Nodes {
		names = append(names, n.Name)
	}
	return names
}

// EchoPodYAML is a YAML document (with its --- separator) for an echo pod
// pinned to node, labelled app, answering HTTP on 8080 and UDP on 9001,
// Ready once it serves, with its name and namespace in its environment
// (Node.ProcessWithEnv finds it by them).
func EchoPodYAML(ns, name, node, app string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {app: %s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: skiff.local/echo:v1
    imagePullPolicy: IfNotPresent
    ports: [{containerPort: 8080, name: http}, {containerPort: 9001, name: udp-echo, protocol: UDP}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    readinessProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 1
---
`, name, ns, app, node)
}
