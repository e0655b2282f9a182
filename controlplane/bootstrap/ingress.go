package bootstrap

import (
	"context"
	"fmt"
	"time"

	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/skiffnet/skiff/ingress"
	"github.com/skiffnet/skiff/ingress/gatewaycrds"
)

// Ingress installs the Gateway API CRDs of the release Skiff is built with,
// and the `skiff` IngressClass (the default) and GatewayClass, so Ingress and
// Gateway objects work with no further setup. Existing classes are kept.
func Ingress(ctx context.Context, rc *rest.Config) error {
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ext, err := apiextensionsclient.NewForConfig(rc)
	if err != nil {
		return err
	}
	if err := gatewaycrds.Install(ctx, ext, kube); err != nil {
		return fmt.Errorf("install the Gateway API CRDs: %w", err)
	}
	if err := create(kube.NetworkingV1().IngressClasses().Create(ctx, ingress.IngressClass(), metav1.CreateOptions{})); err != nil {
		return fmt.Errorf("create IngressClass skiff: %w", err)
	}
	gw, err := gatewayclient.NewForConfig(rc)
	if err != nil {
		return err
	}
	// The CRDs were just created: their API may take a moment to be served.
	for i := 0; ; i++ {
		_, err = gw.GatewayV1().GatewayClasses().Create(ctx, ingress.GatewayClass(), metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		if i == 50 || ctx.Err() != nil {
			return fmt.Errorf("create GatewayClass skiff: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}
