package controller

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/skiffnet/skiff/loadbalancer/api"
	"github.com/skiffnet/skiff/loadbalancer/pool"
)

// LeaseNamespace holds the per-address Leases the agents elect an
// announcing node with.
const LeaseNamespace = "kube-system"

// AnnouncerRole lets the announcers hold those Leases. Agents cannot use
// their node identity for that: the NodeRestriction admission plugin lets
// a node write only its own Lease in kube-node-lease. So the Role is bound
// to the ServiceAccount AnnouncerAccount, whose token Secret
// (AnnouncerSecret) the agents read with the node identity (the skiff:agent
// ClusterRole reads Secrets, for the ingress proxy's TLS).
const AnnouncerRole = "skiff:lb-announcer"

// AnnouncerAccount and AnnouncerSecret are the announcers' identity in
// LeaseNamespace and its token.
const (
	AnnouncerAccount = "skiff-lb-announcer"
	AnnouncerSecret  = "skiff-lb-announcer-token"
)

// DefaultPoolName is the pool --lb-pool creates, for Services;
// GatewayPoolName the one --gateway-cidr creates, for Gateways.
const (
	DefaultPoolName = "default"
	GatewayPoolName = "gateways"
)

// Flags are the server's flags the allocator reads.
type Flags struct {
	LBPool      string // --lb-pool
	GatewayCIDR string // --gateway-cidr
	ServiceCIDR string
	ClusterCIDR string
}

// flagPool is a pool a server flag creates.
type flagPool struct {
	flag, name string
	spec       api.PoolSpec
}

// Pools parses --lb-pool and --gateway-cidr into the pools they stand
// for, refusing blocks that overlap --service-cidr, --cluster-cidr or
// each other, so `skiff server` stops at start with the flag's name rather
// than create a pool that only reports the problem later.
func (f Flags) pools() ([]flagPool, error) {
	var out []flagPool
	for _, fp := range []struct {
		flag, value, name string
		serves            []string
	}{
		{"--lb-pool", f.LBPool, DefaultPoolName, nil},
		{"--gateway-cidr", f.GatewayCIDR, GatewayPoolName, []string{api.ServesGateways}},
	} {
		if fp.value == "" {
			continue
		}
		blocks, err := ParseBlocks(fp.flag, fp.value)
		if err != nil {
			return nil, err
		}
		out = append(out, flagPool{flag: fp.flag, name: fp.name, spec: api.PoolSpec{Blocks: blocks, Serves: fp.serves}})
	}
	reserved := Reserved(f.ServiceCIDR, f.ClusterCIDR)
	var parsed []pool.Pool
	for _, fp := range out {
		p := pool.Parse(&api.Pool{ObjectMeta: metav1.ObjectMeta{Name: fp.name}, Spec: fp.spec})
		if err := pool.CheckReserved(p, reserved); err != nil {
			return nil, fmt.Errorf("%s: %w", fp.flag, err)
		}
		for i, o := range parsed {
			for _, r := range p.Ranges {
				for _, or := range o.Ranges {
					if r.Overlaps(or) {
						return nil, fmt.Errorf("%s %s overlaps %s %s: an address belongs to one pool; list it in one flag (a pool can serve both, see docs/loadbalancer.md)", fp.flag, r, out[i].flag, or)
					}
				}
			}
		}
		parsed = append(parsed, p)
	}
	return out, nil
}

// Validate checks the flags as Pools does, for the server's config check.
func (f Flags) Validate() error {
	_, err := f.pools()
	return err
}

// ParseBlocks reads a pool flag: comma-separated CIDRs and START-STOP
// ranges.
func ParseBlocks(flag, value string) ([]api.Block, error) {
	var out []api.Block
	for _, f := range strings.Split(value, ",") {
		f = strings.TrimSpace(f)
		if start, stop, ok := strings.Cut(f, "-"); ok {
			out = append(out, api.Block{Start: start, Stop: stop})
		} else {
			out = append(out, api.Block{CIDR: f})
		}
	}
	p := pool.Parse(&api.Pool{Spec: api.PoolSpec{Blocks: out}})
	if p.Err != nil {
		return nil, fmt.Errorf("%s %q: %w (want CIDRs or START-STOP ranges, comma-separated, such as 192.168.1.240/28)", flag, value, p.Err)
	}
	return out, nil
}

// Setup installs the LoadBalancerPool CRD, the Role the agents' announcers
// need, and the pools the server's flags stand for (updated when a flag
// changes; deleting the flag leaves the pool to the user).
func Setup(ctx context.Context, rc *rest.Config, pools []flagPool) error {
	ext, err := apiextensionsclient.NewForConfig(rc)
	if err != nil {
		return err
	}
	if err := api.Install(ctx, ext); err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	if err := announcerRBAC(ctx, kube); err != nil {
		return fmt.Errorf("load balancer announcer RBAC: %w", err)
	}
	if len(pools) == 0 {
		return nil
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	for _, p := range pools {
		if err := ensurePool(ctx, dyn, p); err != nil {
			return err
		}
	}
	return nil
}

func announcerRBAC(ctx context.Context, kube kubernetes.Interface) error {
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: AnnouncerRole, Namespace: LeaseNamespace},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
			Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}}},
	}
	if _, err := kube.RbacV1().Roles(LeaseNamespace).Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: AnnouncerRole, Namespace: LeaseNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: AnnouncerRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: AnnouncerAccount, Namespace: LeaseNamespace}},
	}
	if _, err := kube.RbacV1().RoleBindings(LeaseNamespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: AnnouncerAccount, Namespace: LeaseNamespace}}
	if _, err := kube.CoreV1().ServiceAccounts(LeaseNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	// A long-lived token the controller manager fills in: agents on any
	// node read it, where a TokenRequest would need a pod bound to the node.
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: AnnouncerSecret, Namespace: LeaseNamespace,
			Annotations: map[string]string{corev1.ServiceAccountNameKey: AnnouncerAccount}},
		Type: corev1.SecretTypeServiceAccountToken,
	}
	if _, err := kube.CoreV1().Secrets(LeaseNamespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

func ensurePool(ctx context.Context, dyn dynamic.Interface, fp flagPool) error {
	p := &api.Pool{
		TypeMeta:   metav1.TypeMeta{APIVersion: api.Group + "/" + api.Version, Kind: api.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: fp.name},
		Spec:       fp.spec,
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		return err
	}
	delete(raw, "status")
	res := dyn.Resource(api.PoolGVR)
	have, err := res.Get(ctx, fp.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = res.Create(ctx, &unstructured.Unstructured{Object: raw}, metav1.CreateOptions{})
	case err == nil:
		want, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&p.Spec)
		if fmt.Sprint(have.Object["spec"]) == fmt.Sprint(want) {
			return nil
		}
		have.Object["spec"] = want
		_, err = res.Update(ctx, have, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("LoadBalancerPool %s from %s: %w", fp.name, fp.flag, err)
	}
	return nil
}

// ForServer sets up what the allocator needs (Setup) and returns it, for
// `skiff server`.
func ForServer(ctx context.Context, rc *rest.Config, flags Flags, log *slog.Logger) (*Controller, error) {
	pools, err := flags.pools()
	if err != nil {
		return nil, err
	}
	if err := Setup(ctx, rc, pools); err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	gw, err := gatewayclient.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return New(Options{Client: kube, Dynamic: dyn, Gateway: gw, Reserved: Reserved(flags.ServiceCIDR, flags.ClusterCIDR), Logger: log})
}
