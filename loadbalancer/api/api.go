// Package api is Skiff's load balancer API: the LoadBalancerPool resource
// (group lb.skiff.io, cluster-scoped), the loadBalancerClass Skiff serves,
// and the annotations and condition a Service carries. The types are plain
// structs read from unstructured objects (a dynamic client), so no
// generated clientset is needed for one small resource.
package api

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	// Group is Skiff's API group for the load balancer.
	Group = "lb.skiff.io"
	// Version of the LoadBalancerPool resource.
	Version = "v1alpha1"
	// Kind and Resource name the pool resource.
	Kind     = "LoadBalancerPool"
	Resource = "loadbalancerpools"

	// Class is the spec.loadBalancerClass Skiff serves, besides no class.
	// Services of any other class are left to their own controller.
	Class = "skiff.io/lb"

	// IPsAnnotation requests an address, like spec.loadBalancerIP (which
	// Kubernetes deprecated because it cannot say more than one address).
	IPsAnnotation = "lb.skiff.io/ips"
	// SharingKeyAnnotation lets Services with the same key and disjoint
	// ports share one address.
	SharingKeyAnnotation = "lb.skiff.io/sharing-key"

	// ConditionAssigned is the Service condition the allocator writes:
	// True with the address, or False with why the Service is pending.
	ConditionAssigned = "lb.skiff.io/AddressAssigned"
	// ConditionPoolValid is the pool condition: False names the field
	// that is wrong.
	ConditionPoolValid = "Valid"
	// ServesServices and ServesGateways are the values of spec.serves:
	// LoadBalancer Services, and Gateways of GatewayClasses Skiff serves.
	ServesServices = "Services"
	ServesGateways = "Gateways"
)

// PoolGVR is the pool resource for dynamic clients.
var PoolGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// Pool is a LoadBalancerPool: addresses that LoadBalancer Services (those
// the selector picks) get. An address is given to one Service, or to the
// Services that share it with a sharing key.
type Pool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PoolSpec   `json:"spec"`
	Status            PoolStatus `json:"status,omitempty"`
}

// PoolSpec is what the user writes.
type PoolSpec struct {
	// Blocks are the addresses: CIDRs or start-stop ranges, IPv4 only.
	Blocks []Block `json:"blocks"`
	// ServiceSelector limits the pool to the Services it selects; empty
	// selects every Service.
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
	// Disabled stops new allocations; Services keep what they hold.
	Disabled bool `json:"disabled,omitempty"`
	// Serves says who gets addresses from the pool: ServesServices,
	// ServesGateways, or both (they then share its addresses). Empty means
	// Services, which is what every pool meant before Gateways came here.
	Serves []string `json:"serves,omitempty"`
}

// Block is one CIDR, or one inclusive Start-Stop range.
type Block struct {
	CIDR  string `json:"cidr,omitempty"`
	Start string `json:"start,omitempty"`
	Stop  string `json:"stop,omitempty"`
}

// PoolStatus is what the allocator reports; `kubectl get` shows it.
type PoolStatus struct {
	Used       int                `json:"used"`
	Free       int64              `json:"free"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
