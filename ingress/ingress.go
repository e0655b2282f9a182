// Package ingress is Skiff's L7 proxy for Ingress and the Gateway API, as
// the agent runs it: a controller that watches the cluster (ingress/
// controller), compiles route tables (ingress/routes) and swaps them into a
// proxy (ingress/proxy) that sends requests straight to ready endpoints.
//
//	ing, err := ingress.New(ingress.Options{Client: client, HTTPAddr: ":80", HTTPSAddr: ":443"})
//	...
//	err = ing.Run(ctx)
package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/skiffnet/skiff/ingress/controller"
	"github.com/skiffnet/skiff/ingress/gatewayaddr"
	"github.com/skiffnet/skiff/ingress/proxy"
	"github.com/skiffnet/skiff/ingress/routes"
)

// Options configure the ingress of one node.
type Options struct {
	Client kubernetes.Interface
	// GatewayClient enables the Gateway API (GatewayClass "skiff"); nil
	// serves Ingresses only.
	GatewayClient gatewayclient.Interface
	// Factory is an informer factory to share with other components; nil
	// makes one. Run starts it.
	Factory informers.SharedInformerFactory
	// NodeIPs go into status.loadBalancer; empty means the InternalIPs of
	// all Ready nodes.
	NodeIPs []string
	// HTTPAddr and HTTPSAddr are the proxy's listen addresses (":80" and
	// ":443" when both are empty).
	HTTPAddr, HTTPSAddr string
	// ClassName is the IngressClass/GatewayClass name (default "skiff").
	ClassName string
	Logger    *slog.Logger
	// AccessLog enables one log line per request on Logger.
	AccessLog  bool
	Registerer prometheus.Registerer
	// DisableStatus turns off status writes (for read-only credentials).
	DisableStatus bool
	// LocalAddresses makes the addresses of Gateways that have one local
	// to this network namespace (gatewayaddr.Local), as the agent does.
	LocalAddresses bool
}

// Ingress is a running controller and proxy pair.
type Ingress struct {
	opts       Options
	proxy      *proxy.Proxy
	controller *controller.Controller
	// synced is closed by the first table built from synced caches;
	// serving is closed once the proxy accepts with it.
	synced, serving chan struct{}
	syncOnce        sync.Once
}

// New wires the proxy and the controller; nothing listens until Run.
func New(o Options) (*Ingress, error) {
	if o.Client == nil {
		return nil, errors.New("ingress: no client")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HTTPAddr == "" && o.HTTPSAddr == "" {
		o.HTTPAddr, o.HTTPSAddr = ":80", ":443"
	}
	log := o.Logger.With("component", "ingress")
	po := proxy.Options{HTTPAddr: o.HTTPAddr, HTTPSAddr: o.HTTPSAddr, Logger: log, Registerer: o.Registerer}
	if o.AccessLog {
		po.AccessLog = log
	}
	p, err := proxy.New(po)
	if err != nil {
		return nil, err
	}
	httpPort, err := port(o.HTTPAddr, 80)
	if err != nil {
		return nil, err
	}
	httpsPort, err := port(o.HTTPSAddr, 443)
	if err != nil {
		return nil, err
	}
	ing := &Ingress{opts: o, proxy: p, synced: make(chan struct{}), serving: make(chan struct{})}
	swap := func(t *routes.Table) {
		p.Swap(t)
		ing.syncOnce.Do(func() { close(ing.synced) })
	}
	if o.LocalAddresses {
		swapTable := swap
		local, err := gatewayaddr.NewLocal()
		if err != nil {
			return nil, err
		}
		swap = func(t *routes.Table) {
			// Local before the swap: by the time status says the
			// Gateway is programmed, its address answers.
			if err := local.Sync(t.GatewayAddresses()); err != nil {
				log.Warn("making Gateway addresses local", "err", err)
			}
			swapTable(t)
		}
	}
	c, err := controller.New(controller.Options{
		Client:        o.Client,
		Gateway:       o.GatewayClient,
		Factory:       o.Factory,
		ClassName:     o.ClassName,
		NodeIPs:       o.NodeIPs,
		HTTPPort:      httpPort,
		HTTPSPort:     httpsPort,
		Swap:          swap,
		Logger:        log,
		DisableStatus: o.DisableStatus,
	})
	if err != nil {
		return nil, err
	}
	ing.controller = c
	return ing, nil
}

func port(addr string, def int32) (int32, error) {
	if addr == "" {
		return def, nil
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("ingress: address %q: %w", addr, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("ingress: address %q: %w", addr, err)
	}
	return int32(n), nil
}

// Proxy returns the proxy, for embedding its handlers elsewhere.
func (i *Ingress) Proxy() *proxy.Proxy { return i.proxy }

// Run listens on the configured addresses and serves until ctx ends or
// either half fails. See Serve.
func (i *Ingress) Run(ctx context.Context) error {
	httpLn, httpsLn, err := Listen(i.opts.HTTPAddr, i.opts.HTTPSAddr)
	if err != nil {
		return err
	}
	return i.Serve(ctx, httpLn, httpsLn)
}

// Listen opens the proxy's listeners; an empty address opens none.
func Listen(httpAddr, httpsAddr string) (httpLn, httpsLn net.Listener, err error) {
	if httpAddr != "" {
		if httpLn, err = net.Listen("tcp", httpAddr); err != nil {
			return nil, nil, fmt.Errorf("ingress http listener: %w", err)
		}
	}
	if httpsAddr != "" {
		if httpsLn, err = net.Listen("tcp", httpsAddr); err != nil {
			if httpLn != nil {
				httpLn.Close()
			}
			return nil, nil, fmt.Errorf("ingress https listener: %w", err)
		}
	}
	return httpLn, httpsLn, nil
}

// Serve runs the controller and serves on the given listeners (either may
// be nil) until ctx ends or either half fails; then it stops accepting and
// lets in-flight requests finish. The proxy accepts only once it has a
// table built from synced caches: until then connections wait in the
// listen queue rather than get 404 for hosts that have routes.
func (i *Ingress) Serve(ctx context.Context, httpLn, httpsLn net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- i.controller.Run(ctx) }()
	select {
	case <-i.synced:
	case err := <-errc:
		closeListeners(httpLn, httpsLn)
		if err == nil {
			err = errors.New("ingress controller stopped before its first route table")
		}
		return err
	case <-ctx.Done():
		closeListeners(httpLn, httpsLn)
		<-errc
		return nil
	}
	go func() { errc <- i.proxy.ServeListeners(ctx, httpLn, httpsLn) }()
	close(i.serving)
	err := <-errc
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

// Serving is closed once the proxy accepts connections.
func (i *Ingress) Serving() <-chan struct{} { return i.serving }

func closeListeners(ls ...net.Listener) {
	for _, l := range ls {
		if l != nil {
			l.Close()
		}
	}
}

// IngressClass is the IngressClass the server creates at bootstrap: Skiff
// is the cluster's default, so Ingresses without a class are served too.
func IngressClass() *networkingv1.IngressClass {
	return &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        routes.ClassName,
			Annotations: map[string]string{networkingv1.AnnotationIsDefaultIngressClass: "true"},
		},
		Spec: networkingv1.IngressClassSpec{Controller: routes.Controller},
	}
}

// GatewayClass is the GatewayClass the server creates once the Gateway API
// CRDs (package gatewaycrds) are installed.
func GatewayClass() *gatewayv1.GatewayClass {
	desc := "Skiff's node proxy"
	return &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: routes.ClassName},
		Spec:       gatewayv1.GatewayClassSpec{ControllerName: routes.GatewayController, Description: &desc},
	}
}
