package cluster

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// poll checks cond every 500 ms until it holds or timeout passes.
func poll(timeout time.Duration, cond func() bool) error {
	return wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true,
		func(context.Context) (bool, error) { return cond(), nil })
}

// WaitRollout waits for `kubectl rollout status` of obj to finish.
func (c *Cluster) WaitRollout(t testing.TB, obj string) {
	t.Helper()
	if out, err := c.Kubectl("rollout", "status", obj, "--timeout=180s"); err != nil {
		desc, _ := c.Kubectl("describe", "pods")
		t.Fatalf("%v\n%s\n%s", err, out, desc)
	}
}

// NodePort returns the default namespace's Service's first node port.
func (c *Cluster) NodePort(t testing.TB, svc string) int32 {
	t.Helper()
	s, err := c.Client().CoreV1().Services("default").Get(context.Background(), svc, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Spec.Ports[0].NodePort
}
