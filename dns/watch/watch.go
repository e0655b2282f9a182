// Package watch keeps a DNS handler's table in line with the cluster: it
// watches Services and EndpointSlices with client-go informers and rebuilds
// the records table (cheaply, debounced) on every change.
package watch

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/skiffnet/skiff/dns/records"
)

// Updater is what the watcher feeds: the DNS handler.
type Updater interface {
	Update(*records.Table) error
}

// Debounce batches bursts of changes into one rebuild, well inside the
// 1 s in which answers must follow the cluster.
const Debounce = 50 * time.Millisecond

// Run registers informers on factory (call it before factory.Start), then
// rebuilds the table into u whenever Services or EndpointSlices change.
// log may be nil.
func Run(ctx context.Context, factory informers.SharedInformerFactory, opts records.Options, u Updater, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	svcs := factory.Core().V1().Services()
	slices := factory.Discovery().V1().EndpointSlices()
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	for _, inf := range []cache.SharedIndexInformer{svcs.Informer(), slices.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("dns: watch: %w", err)
		}
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), svcs.Informer().HasSynced, slices.Informer().HasSynced) {
		return ctx.Err()
	}
	for {
		list, err := svcs.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		eps, err := slices.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		opts.Serial++
		t, err := records.Build(opts, list, eps)
		if err != nil {
			return fmt.Errorf("dns: build records: %w", err)
		}
		if err := u.Update(t); err != nil {
			log.Error("dns: cannot serve the new records; keeping the old ones", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(Debounce):
		}
	}
}
