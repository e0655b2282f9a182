package cluster

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestNodesJoin brings up a 3-node cluster: every agent joins with the token
// through TLS bootstrap, registers its Node with its own IP and PodCIDR.
func TestNodesJoin(t *testing.T) {
	c := Start(t, Options{Nodes: 3})
	nodes, err := c.Client().CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Fatalf("%d nodes, want 3", len(nodes.Items))
	}
	cidrs := map[string]bool{}
	for i, n := range c.Nodes {
		node, err := c.Client().CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := node.Status.Addresses[0].Address; got != NodeIP(i) {
			t.Errorf("%s InternalIP = %s, want %s", n.Name, got, NodeIP(i))
		}
		if node.Spec.PodCIDR == "" || cidrs[node.Spec.PodCIDR] {
			t.Errorf("%s PodCIDR %q missing or shared", n.Name, node.Spec.PodCIDR)
		}
		cidrs[node.Spec.PodCIDR] = true
	}
	if out := c.MustKubectl("get", "nodes", "-o", "wide"); len(out) == 0 {
		t.Error("kubectl get nodes printed nothing")
	}
}
