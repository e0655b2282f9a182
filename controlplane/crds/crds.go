// Package crds installs the CustomResourceDefinitions Skiff embeds (the
// Gateway API's and its own LoadBalancerPool) the same way: create what
// is missing, update what carries another version annotation, so a server
// upgrade brings its CRDs along, and leave the rest alone.
package crds

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Ensure creates or updates each CRD; versionKey is the annotation that
// tells one version of a CRD from another. The CRDs go in concurrently:
// the API server compiles each one's validation rules (the Gateway API's
// hold dozens of CEL expressions) on create, which one at a time took
// seconds of a fresh server's start-up.
func Ensure(ctx context.Context, ext apiextensionsclient.Interface, versionKey string, want ...*apiextensionsv1.CustomResourceDefinition) error {
	errs := make([]error, len(want))
	var wg sync.WaitGroup
	for i, w := range want {
		wg.Go(func() { errs[i] = ensure(ctx, ext, versionKey, w) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func ensure(ctx context.Context, ext apiextensionsclient.Interface, versionKey string, w *apiextensionsv1.CustomResourceDefinition) error {
	crds := ext.ApiextensionsV1().CustomResourceDefinitions()
	have, err := crds.Get(ctx, w.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := crds.Create(ctx, w, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating CRD %s: %w", w.Name, err)
		}
	case err != nil:
		return fmt.Errorf("reading CRD %s: %w", w.Name, err)
	case have.Annotations[versionKey] != w.Annotations[versionKey]:
		w = w.DeepCopy()
		w.ResourceVersion = have.ResourceVersion
		if _, err := crds.Update(ctx, w, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating CRD %s to %s %s: %w", w.Name, versionKey, w.Annotations[versionKey], err)
		}
	}
	return nil
}

// WaitEstablished waits until the API server serves the CRD named name.
func WaitEstablished(ctx context.Context, ext apiextensionsclient.Interface, name string) error {
	crds := ext.ApiextensionsV1().CustomResourceDefinitions()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		c, err := crds.Get(ctx, name, metav1.GetOptions{})
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
		return fmt.Errorf("CRD %s not established: %w", name, err)
	}
	return nil
}
