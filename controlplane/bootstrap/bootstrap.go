// Package bootstrap creates the objects a fresh Skiff cluster needs beyond
// what the API server makes itself: the cluster DNS Service and what lets
// nodes join with the bootstrap token (RBAC, the token Secret). Every object
// is created if missing and left alone otherwise, so restarts are no-ops and
// a user's edits survive.
package bootstrap

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffnet/skiff/controlplane/localpath"
	"github.com/skiffnet/skiff/controlplane/pki"
)

// Config says what to create.
type Config struct {
	ClusterDNS string
	Token      pki.JoinToken
}

// NodeBootstrapGroup is the group the join token authenticates as, beside
// upstream's system:bootstrappers.
const NodeBootstrapGroup = "system:bootstrappers:skiff:nodes"

// Apply creates the bootstrap objects.
func Apply(ctx context.Context, client kubernetes.Interface, cfg Config) error {
	steps := []func(context.Context, kubernetes.Interface, Config) error{
		kubeDNSService, tokenSecret, nodeRBAC, agentRBAC, storageClass,
	}
	for _, step := range steps {
		if err := step(ctx, client, cfg); err != nil {
			return err
		}
	}
	return nil
}

func kubeDNSService(ctx context.Context, client kubernetes.Interface, cfg Config) error {
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: metav1.NamespaceSystem, Labels: map[string]string{
			"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true",
		}},
		Spec: corev1.ServiceSpec{
			// No selector: every agent answers DNS itself and its service LB
			// sends this address to the node-local listener.
			ClusterIP: cfg.ClusterDNS,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: udp, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: tcp, TargetPort: intstr.FromInt32(53)},
			},
		},
	}
	// Look first: creating over an existing Service fails on its ClusterIP
	// before the API server would say AlreadyExists.
	services := client.CoreV1().Services(metav1.NamespaceSystem)
	if _, err := services.Get(ctx, svc.Name, metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("get kube-dns Service: %w", err)
	}
	return create(services.Create(ctx, svc, metav1.CreateOptions{}))
}

func tokenSecret(ctx context.Context, client kubernetes.Interface, cfg Config) error {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + cfg.Token.ID, Namespace: metav1.NamespaceSystem},
		Type:       corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{
			"description":                    "skiff node join token (DATA/token)",
			"token-id":                       cfg.Token.ID,
			"token-secret":                   cfg.Token.Secret,
			"usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing":        "true",
			"auth-extra-groups":              NodeBootstrapGroup,
		},
	}
	return create(client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{}))
}

// nodeRBAC lets token holders request node client certificates and has the
// controller manager approve them, as kubeadm sets up kubelet TLS bootstrap.
func nodeRBAC(ctx context.Context, client kubernetes.Interface, _ Config) error {
	group := func(name string) []rbacv1.Subject {
		return []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}}
	}
	bindings := []struct{ name, role, group string }{
		{"skiff:node-bootstrapper", "system:node-bootstrapper", NodeBootstrapGroup},
		{"skiff:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", NodeBootstrapGroup},
		{"skiff:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes"},
	}
	for _, b := range bindings {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: b.name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: b.role},
			Subjects:   group(b.group),
		}
		if err := create(client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})); err != nil {
			return err
		}
	}
	return nil
}

func create[T any](_ T, err error) error {
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create: %w", err)
	}
	return nil
}

// AgentRole is what every node's data plane reads: the proxy, DNS and
// ingress watch Services, EndpointSlices, Nodes and routing objects of the
// whole cluster, and the ingress proxy reads TLS Secrets, as an ingress
// controller's service account would.
const AgentRole = "skiff:agent"

func agentRBAC(ctx context.Context, client kubernetes.Interface, _ Config) error {
	read := []string{"get", "list", "watch"}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: AgentRole},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "endpoints", "nodes", "pods", "namespaces", "secrets", "configmaps"}, Verbs: read},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses", "ingressclasses", "networkpolicies"}, Verbs: read},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses/status"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"*"}, Verbs: read},
			{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
	}
	if err := reconcileRole(ctx, client, role); err != nil {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: AgentRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: AgentRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:nodes"}},
	}
	return create(client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}))
}

// reconcileRole creates role, or brings an existing one's rules up to date:
// a cluster made by an older Skiff keeps working after an upgrade whose
// agents read more (as upstream reconciles its bootstrap roles).
func reconcileRole(ctx context.Context, client kubernetes.Interface, role *rbacv1.ClusterRole) error {
	roles := client.RbacV1().ClusterRoles()
	_, err := roles.Create(ctx, role, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	cur, err := roles.Get(ctx, role.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(cur.Rules, role.Rules) {
		return nil
	}
	cur.Rules = role.Rules
	_, err = roles.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

func storageClass(ctx context.Context, client kubernetes.Interface, _ Config) error {
	return create(client.StorageV1().StorageClasses().Create(ctx, localpath.Class(), metav1.CreateOptions{}))
}
