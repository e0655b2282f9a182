// Package node is Skiff's cluster DNS as the agent runs it: informers on the
// cluster's Services and EndpointSlices feed the records table, a handler
// answers it on every listen address over UDP and TCP, and other names go
// to the node's resolvers through a cache. Wire it in with New and Run.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffnet/skiff/dns/forward"
	"github.com/skiffnet/skiff/dns/records"
	"github.com/skiffnet/skiff/dns/server"
	"github.com/skiffnet/skiff/dns/watch"
)

// DefaultResolvConf lists the node's upstream resolvers.
const DefaultResolvConf = "/etc/resolv.conf"

// Options configure a Server.
type Options struct {
	// Client reaches the API server. Required unless Factory is set.
	Client kubernetes.Interface
	// Factory, if set, is the agent's shared informer factory: DNS then
	// adds its informers to the ones the rest of the agent already runs.
	Factory informers.SharedInformerFactory
	// Listen are the HOST:PORT addresses to answer on over UDP and TCP,
	// e.g. "10.96.0.10:53" (the kube-dns ClusterIP) and "169.254.20.10:53"
	// (a node-local address). Port 0 picks a free port (tests).
	Listen []string
	// Interface, if set, names a dummy interface (DefaultInterface, say)
	// that Run creates to hold the listen addresses that are not on the
	// node yet, and deletes when it returns.
	Interface string
	// Zone is the cluster domain (default cluster.local); TTL that of
	// every cluster record (default 30 s).
	Zone string
	TTL  uint32
	// ResolvConf is read for upstream resolvers (default /etc/resolv.conf)
	// unless Upstreams (HOST:PORT) are given. Upstreams that are one of our
	// own listen addresses are dropped: forwarding to ourselves would loop.
	ResolvConf string
	Upstreams  []string
	// Logger defaults to discarding; Registerer, if set, receives the
	// query, cache and upstream metrics.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Server is the node's cluster DNS.
type Server struct {
	o       Options
	log     *slog.Logger
	handler *server.Handler
	records records.Options

	ready     chan struct{}
	readyOnce sync.Once
	mu        sync.Mutex
	addrs     []string

	names prometheus.Gauge
}

// New checks o and builds the handler. Nothing is bound or watched until
// Run. A missing or empty resolv.conf is not an error: cluster names still
// answer, and other names get SERVFAIL (logged).
func New(o Options) (*Server, error) {
	if o.Client == nil && o.Factory == nil {
		return nil, errors.New("dns: Options.Client or Options.Factory is required")
	}
	if len(o.Listen) == 0 {
		return nil, errors.New("dns: no listen address")
	}
	for _, a := range o.Listen {
		if _, _, err := splitAddr(a); err != nil {
			return nil, err
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ResolvConf == "" {
		o.ResolvConf = DefaultResolvConf
	}
	s := &Server{
		o:       o,
		log:     o.Logger,
		records: records.Options{Zone: o.Zone, TTL: o.TTL},
		ready:   make(chan struct{}),
		names: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_dns_names",
			Help: "Owner names in the cluster DNS table being served.",
		}),
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(s.names); err != nil {
			return nil, fmt.Errorf("dns: metrics: %w", err)
		}
	}
	empty, err := records.Build(s.records, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	fwd, err := s.forwarder()
	if err != nil {
		return nil, err
	}
	var f server.Forwarder
	if fwd != nil {
		f = fwd // a nil *Forwarder in the interface would not be nil
	}
	if s.handler, err = server.NewHandler(empty, f, o.Registerer, s.log); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	return s, nil
}

func (s *Server) forwarder() (*forward.Forwarder, error) {
	ups := s.o.Upstreams
	if len(ups) == 0 {
		var err error
		if ups, err = forward.FromResolvConf(s.o.ResolvConf); err != nil {
			s.log.Warn("no upstream resolvers: names outside the cluster will get SERVFAIL", "err", err)
			return nil, nil
		}
	}
	ups = slices.DeleteFunc(slices.Clone(ups), func(up string) bool {
		upIP, upPort, err := splitAddr(up)
		if err != nil {
			return false
		}
		for _, l := range s.o.Listen {
			if ip, port, _ := splitAddr(l); ip == upIP && port == upPort {
				s.log.Warn("not forwarding to an upstream that is ourselves", "upstream", up)
				return true
			}
		}
		return false
	})
	if len(ups) == 0 {
		s.log.Warn("no upstream resolvers left: names outside the cluster will get SERVFAIL")
		return nil, nil
	}
	s.log.Info("forwarding other names", "upstreams", ups)
	f, err := forward.New(forward.Options{Upstreams: ups, Registerer: s.o.Registerer})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	return f, nil
}

func splitAddr(a string) (netip.Addr, string, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("dns: address %q: want HOST:PORT: %w", a, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("dns: address %q: want an IP address: %w", a, err)
	}
	return ip.Unmap(), port, nil
}

// Handler is the query handler, for callers that run their own listeners.
func (s *Server) Handler() *server.Handler { return s.handler }

// Ready is closed once every listener is bound and the first table built
// from the informers' caches is served: from then on answers are complete.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addrs are the bound addresses (the actual ports when Listen used port 0);
// empty before Run has bound them.
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.addrs)
}

// Update serves t and marks the server ready: watch calls it.
func (s *Server) Update(t *records.Table) error {
	start := time.Now()
	if err := s.handler.Update(t); err != nil {
		return err
	}
	s.names.Set(float64(t.Len()))
	s.log.Debug("serving new DNS records", "names", t.Len(), "serial", t.SOA.Serial, "compile", time.Since(start))
	s.readyOnce.Do(func() { close(s.ready) })
	return nil
}

// Run binds the listeners (adding their addresses to Options.Interface when
// set), watches the cluster and answers until ctx is done. It returns nil
// then, or the first error that stopped it.
func (s *Server) Run(ctx context.Context) error {
	if s.o.Interface != "" {
		d, err := s.dummy()
		if err != nil {
			return err
		}
		if d != nil {
			defer func() {
				if err := d.Close(); err != nil {
					s.log.Error("cannot remove the DNS addresses", "err", err)
				}
			}()
		}
	}
	type listener struct {
		pc net.PacketConn
		ln net.Listener
	}
	var ls []listener
	closeAll := func() {
		for _, l := range ls {
			l.pc.Close()
			l.ln.Close()
		}
	}
	var bound []string
	for _, a := range s.o.Listen {
		pc, ln, err := server.Listen(a)
		if err != nil {
			closeAll()
			return err
		}
		ls = append(ls, listener{pc, ln})
		bound = append(bound, pc.LocalAddr().String())
	}
	s.mu.Lock()
	s.addrs = bound
	s.mu.Unlock()
	s.log.Info("cluster DNS listening", "addrs", bound, "zone", s.handler.Table().Zone)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(ls)+1)
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() {
			if err := s.handler.Serve(ctx, l.pc, l.ln); err != nil {
				errs <- err
			}
		})
	}
	factory := s.o.Factory
	if factory == nil {
		factory = informers.NewSharedInformerFactory(s.o.Client, 0)
		defer factory.Shutdown()
	}
	wg.Go(func() {
		if err := watch.Run(ctx, factory, s.records, s, s.log); err != nil {
			errs <- fmt.Errorf("dns: watch: %w", err)
		}
	})
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	cancel()
	wg.Wait()
	return err
}

// dummy adds the listen addresses that are not local yet to the dummy
// interface; nil when every address is already local.
func (s *Server) dummy() (*Dummy, error) {
	var missing []netip.Addr
	for _, a := range s.o.Listen {
		ip, _, _ := splitAddr(a)
		if ip.IsUnspecified() || slices.Contains(missing, ip) {
			continue
		}
		ok, err := local(ip)
		if err != nil {
			return nil, err
		}
		if !ok {
			missing = append(missing, ip)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	d, err := AddDummy(s.o.Interface, missing...)
	if err != nil {
		return nil, err
	}
	s.log.Info("added the DNS addresses to a dummy interface", "interface", d.Name(), "addrs", missing)
	return d, nil
}
