package api

import (
	"context"
	_ "embed"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"sigs.k8s.io/yaml"

	"github.com/skiffnet/skiff/controlplane/crds"
)

//go:embed loadbalancerpools.yaml
var crdYAML []byte

const crdVersion = "lb.skiff.io/crd-version"

// CRD is the LoadBalancerPool CustomResourceDefinition.
func CRD() (*apiextensionsv1.CustomResourceDefinition, error) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(crdYAML, crd); err != nil {
		return nil, fmt.Errorf("the embedded LoadBalancerPool CRD: %w", err)
	}
	return crd, nil
}

// Install creates the CRD when missing, updates one of another version
// (controlplane/crds, shared with the Gateway API's), and waits until the
// API server serves it.
func Install(ctx context.Context, ext apiextensionsclient.Interface) error {
	want, err := CRD()
	if err != nil {
		return err
	}
	if err := crds.Ensure(ctx, ext, crdVersion, want); err != nil {
		return err
	}
	return crds.WaitEstablished(ctx, ext, want.Name)
}
