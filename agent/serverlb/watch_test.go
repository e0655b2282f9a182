package serverlb

import (
	"context"
	"slices"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func slice(ready map[string]bool) *discoveryv1.EndpointSlice {
	name, port := "https", int32(6443)
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}
	for a, r := range ready {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &r}})
	}
	return s
}

func TestWatchFollowsTheKubernetesEndpoints(t *testing.T) {
	client := fake.NewSimpleClientset(slice(map[string]bool{"10.0.0.1": true, "10.0.0.2": true, "10.0.0.3": false}))
	b := run(t, Options{Servers: []string{"10.0.0.1:6443"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Watch(ctx, client)
	waitList(t, b, []string{"10.0.0.1:6443", "10.0.0.2:6443"})
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(ctx, slice(map[string]bool{"10.0.0.2": true, "10.0.0.3": true}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitList(t, b, []string{"10.0.0.2:6443", "10.0.0.3:6443"})
}

func waitList(t *testing.T, b *Balancer, want []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(b.Servers(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("servers %v, want %v", b.Servers(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
