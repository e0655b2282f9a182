package api

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"
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
// (as ingress/gatewaycrds does, so a server upgrade brings its CRD), and
// waits until the API server serves it.
func Install(ctx context.Context, ext apiextensionsclient.Interface) error {
	want, err := CRD()
	if err != nil {
		return err
	}
	crds := ext.ApiextensionsV1().CustomResourceDefinitions()
	have, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := crds.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating CRD %s: %w", want.Name, err)
		}
	case err != nil:
		return fmt.Errorf("reading CRD %s: %w", want.Name, err)
	case have.Annotations[crdVersion] != want.Annotations[crdVersion]:
		want.ResourceVersion = have.ResourceVersion
		if _, err := crds.Update(ctx, want, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating CRD %s: %w", want.Name, err)
		}
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		c, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range c.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s not established: %w", want.Name, err)
	}
	return nil
}
