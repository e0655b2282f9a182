package serverlb

import (
	"context"
	"net"
	"slices"
	"strconv"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Watch keeps the list equal to the ready endpoints of the default/
// kubernetes Service, which every API server keeps its own address in,
// until ctx is done.
func (b *Balancer) Watch(ctx context.Context, client kubernetes.Interface) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(metav1.NamespaceDefault),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelServiceName + "=kubernetes"
		}))
	inf := factory.Discovery().V1().EndpointSlices()
	lister := inf.Lister()
	update := func() {
		eps, err := lister.List(labels.Everything())
		if err != nil {
			return
		}
		b.SetServers(Addresses(eps))
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { update() },
		UpdateFunc: func(any, any) { update() },
		DeleteFunc: func(any) { update() },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	return nil
}

// Addresses are the ready endpoints' HOST:PORT, sorted.
func Addresses(eps []*discoveryv1.EndpointSlice) []string {
	var out []string
	for _, s := range eps {
		port := 0
		for _, p := range s.Ports {
			if p.Port != nil && (port == 0 || (p.Name != nil && *p.Name == "https")) {
				port = int(*p.Port)
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(port)))
			}
		}
	}
	slices.Sort(out)
	return out
}
