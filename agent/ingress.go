package agent

import (
	"context"
	"fmt"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/skiffnet/skiff/ingress"
)

// startIngress runs the node's L7 proxy for Ingress and Gateway API
// routes, sending requests straight to ready endpoints.
func (a *Agent) startIngress(ctx context.Context, client kubernetes.Interface, kubeconfig string, factory informers.SharedInformerFactory, done chan<- error) error {
	c := &a.cfg
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("ingress: load %s: %w", kubeconfig, err)
	}
	gw, err := gatewayclient.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	ing, err := ingress.New(ingress.Options{
		Client:        client,
		GatewayClient: gw,
		Factory:       factory,
		HTTPAddr:      c.IngressHTTP,
		HTTPSAddr:     c.IngressHTTPS,
		Logger:        c.Logger.With("component", "ingress"),
		Registerer:    a.metrics,
		AccessLog:     c.IngressAccessLog,
		// Gateways with an address of their own (server --gateway-cidr
		// or spec.addresses) are served on it by every node.
		LocalAddresses: true,
	})
	if err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	a.progress("ingress proxy on %s (HTTP) and %s (HTTPS)", c.IngressHTTP, c.IngressHTTPS)
	go func() { done <- component("ingress proxy", ing.Run(ctx)) }()
	return nil
}
