package announce

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TokenClient returns a client for the Leases: the ServiceAccount token in
// Secret namespace/secret, read with the node's own client, on the node's
// server and CA. The node identity itself cannot write these Leases (the
// NodeRestriction admission plugin allows a node only its own Lease in
// kube-node-lease). It waits until the controller manager has filled the
// token in.
func TokenClient(node kubernetes.Interface, base *rest.Config, namespace, secret string) func(context.Context) (kubernetes.Interface, error) {
	return func(ctx context.Context) (kubernetes.Interface, error) {
		var token []byte
		var last error
		err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
			s, err := node.CoreV1().Secrets(namespace).Get(ctx, secret, metav1.GetOptions{})
			if err != nil {
				last = err
				return false, nil
			}
			token = s.Data["token"]
			return len(token) > 0, nil
		})
		if err != nil {
			return nil, fmt.Errorf("the load balancer announcer's token (Secret %s/%s; %v): %w", namespace, secret, last, err)
		}
		cfg := rest.AnonymousClientConfig(base)
		cfg.BearerToken = string(token)
		// Every address costs a few requests per retry period; client-go's
		// default limit (5/s) would delay renewals past their deadline and
		// make releases fail, so the limit is the API server's to enforce.
		cfg.QPS, cfg.Burst = 200, 400
		return kubernetes.NewForConfig(cfg)
	}
}
