//go:build tools

// Package upstream pins the upstream programs `make conformance` builds:
// Kubernetes' own e2e.test and test images, and the ginkgo runner, at the
// Kubernetes version Skiff is built from. It is a module of its own so the
// test-only dependencies of e2e.test stay out of Skiff's go.mod.
package upstream

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
	_ "k8s.io/kubernetes/test/images/nonewprivs"
	_ "k8s.io/kubernetes/test/images/resource-consumer"
	_ "k8s.io/kubernetes/test/images/resource-consumer/consume-cpu"
	_ "k8s.io/sample-apiserver"
)
