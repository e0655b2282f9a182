package node_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeAPI changes the fake cluster under a running server.
type fakeAPI struct{ c *fake.Clientset }

func (a *fakeAPI) create(t *testing.T, svc *corev1.Service, slices ...*discoveryv1.EndpointSlice) {
	t.Helper()
	ctx := context.Background()
	if _, err := a.c.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range slices {
		if _, err := a.c.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}
