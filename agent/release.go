package agent

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffnet/skiff/footprint"
)

// releaseWhenReady gives back what start-up left in memory (package
// footprint) once the node is Ready: the kubelet goes on starting its
// managers for a while after the agent itself is up, and Ready is when it
// has finished.
func (a *Agent) releaseWhenReady(ctx context.Context, client kubernetes.Interface) {
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		return err == nil && nodeReady(n), nil
	})
	if err != nil {
		return // the agent is stopping
	}
	footprint.ReleaseStartup()
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
