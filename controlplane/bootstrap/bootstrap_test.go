package bootstrap

import (
	"context"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A cluster made by an older Skiff has a skiff:agent role with fewer
// rules; the server's start brings it up to date, so upgraded agents can
// read what they now watch (NetworkPolicies, for one).
func TestAgentRoleIsReconciled(t *testing.T) {
	old := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: AgentRole},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get"}}},
	}
	client := fake.NewClientset(old)
	ctx := context.Background()
	for i := 0; i < 2; i++ { // the second start changes nothing
		if err := agentRBAC(ctx, client, Config{}); err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
	}
	role, err := client.RbacV1().ClusterRoles().Get(ctx, AgentRole, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			found = found || res == "networkpolicies"
		}
	}
	if !found || len(role.Rules) == 1 {
		t.Errorf("the existing role kept its old rules: %+v", role.Rules)
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Get(ctx, AgentRole, metav1.GetOptions{}); err != nil {
		t.Errorf("binding: %v", err)
	}
}
