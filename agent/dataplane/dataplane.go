// Package dataplane is the node's serving data plane: the cluster DNS
// server and the Ingress / Gateway proxy, in a process of their own
// (`skiff dataplane`) that the agent starts and that outlives it. The
// agent, its kubelet and its load-balancer controller can stop, crash or
// be upgraded while this process keeps answering; a new agent starts a new
// data plane, which takes the running one's listening sockets (package
// handoff), loads its tables from synced informer caches and only then
// tells the old one to drain. Nothing is ever answered from an empty
// table: a fresh data plane accepts once it has synced.
//
// The eBPF service load balancer and the pod routes need no such process:
// the kernel keeps serving them from pinned maps and routes while their
// controllers in the agent restart.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/skiffnet/skiff/agent/handoff"
	"github.com/skiffnet/skiff/dns/forward"
	"github.com/skiffnet/skiff/dns/records"
	dnsserver "github.com/skiffnet/skiff/dns/server"
	"github.com/skiffnet/skiff/dns/watch"
	"github.com/skiffnet/skiff/footprint"
	"github.com/skiffnet/skiff/ingress"
)

// Config is what the agent tells its data plane (as `skiff dataplane`
// flags).
type Config struct {
	NodeName   string
	NodeIP     string
	Kubeconfig string // the node's credentials
	// ClusterDomain is the DNS zone (cluster.local).
	ClusterDomain string
	// IngressHTTP and IngressHTTPS are the proxy's listen addresses.
	IngressHTTP, IngressHTTPS string
	IngressAccessLog          bool
	// Socket is the control socket (status, metrics, handoff); default
	// SocketPath(NodeName).
	Socket string
	// Version is this binary's version, reported to the agent and to a
	// successor.
	Version string
	// ResolvConf lists the upstream resolvers (default /etc/resolv.conf).
	ResolvConf string
	Logger     *slog.Logger
}

// RunDir holds the node's runtime sockets; it is gone after a reboot,
// like the processes that own them.
const RunDir = "/run/skiff"

// SocketPath is the control socket of a node's data plane.
func SocketPath(node string) string { return filepath.Join(RunDir, node, "dataplane.sock") }

// DNSAddr is where a node's cluster DNS answers: the load balancer sends
// the kube-dns ClusterIP there.
func (c *Config) DNSAddr() string { return net.JoinHostPort(c.NodeIP, "53") }

func (c *Config) defaults() {
	if c.Socket == "" {
		c.Socket = SocketPath(c.NodeName)
	}
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run serves the node's DNS and ingress until ctx ends (then it drains)
// or a successor takes over (then it drains and returns nil).
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	log := cfg.Logger
	self := handoff.Peer{PID: os.Getpid(), Version: cfg.Version}
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o700); err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	gw, err := gatewayclient.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	reg := prometheus.NewRegistry()
	factory := informers.NewSharedInformerFactory(client, 0)

	// Sockets first: either the running data plane's, or our own. Until
	// the handoff completes the predecessor keeps answering on them.
	ho, err := handoff.Take(ctx, cfg.Socket, self)
	if err != nil && !errors.Is(err, handoff.ErrNoPredecessor) {
		return err
	}
	if ho != nil {
		defer ho.Close()
		log.Info("taking over from the running data plane", "old_pid", ho.From.PID, "old_version", ho.From.Version)
	}
	socks, err := openSockets(cfg, ho)
	if err != nil {
		return err
	}
	defer socks.close()

	dns, dnsSynced, err := newDNS(ctx, cfg, factory, reg)
	if err != nil {
		return err
	}
	ing, err := ingress.New(ingress.Options{
		Client: client, GatewayClient: gw, Factory: factory,
		HTTPAddr: cfg.IngressHTTP, HTTPSAddr: cfg.IngressHTTPS,
		Logger: log, Registerer: reg, AccessLog: cfg.IngressAccessLog,
		// Gateways with an address of their own are served on it by
		// every node.
		LocalAddresses: true,
	})
	if err != nil {
		return fmt.Errorf("ingress: %w", err)
	}

	serveCtx, drain := context.WithCancel(ctx)
	defer drain()
	errc := make(chan error, 2)
	go func() { errc <- component("ingress proxy", ing.Serve(serveCtx, socks.httpLn, socks.httpsLn)) }()
	go func() {
		select {
		case <-dnsSynced:
		case <-serveCtx.Done():
			socks.dnsUDP.Close()
			socks.dnsTCP.Close()
			errc <- nil
			return
		}
		errc <- component("dns", dns.Serve(serveCtx, socks.dnsUDP, socks.dnsTCP))
	}()
	// The listeners now belong to the servers, which close them on drain.
	socks.release()

	if err := waitServing(ctx, ing.Serving(), dnsSynced, errc); err != nil {
		return err
	}
	st := Status{PID: self.PID, Version: cfg.Version, Node: cfg.NodeName, Since: time.Now(),
		DNS: cfg.DNSAddr(), HTTP: cfg.IngressHTTP, HTTPS: cfg.IngressHTTPS}
	if ho != nil {
		st.Predecessor = &ho.From
	}
	offer := &handoff.Offer{Self: self, Sockets: socks.list, Replaced: func(s handoff.Peer) {
		log.Info("a new data plane took over; draining", "new_pid", s.PID, "new_version", s.Version)
		drain()
	}}
	ctl, err := listenControl(cfg.Socket, st, reg, offer, log)
	if err != nil {
		return err
	}
	defer ctl.Close()
	if ho != nil {
		if err := ho.Ready(); err != nil {
			log.Warn("telling the old data plane to drain", "err", err)
		}
		log.Info("took over; the old data plane drains", "old_pid", ho.From.PID)
	}
	if err := ctl.publish(); err != nil {
		log.Error("the agent cannot reach this data plane", "err", err)
	}
	log.Info("serving", "dns", cfg.DNSAddr(), "http", cfg.IngressHTTP, "https", cfg.IngressHTTPS)
	footprint.ReleaseStartup()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
			drain()
		}
	}
	return first
}

// waitServing waits until both servers answer from synced tables.
func waitServing(ctx context.Context, ingressServing, dnsSynced <-chan struct{}, errc <-chan error) error {
	for ingressServing != nil || dnsSynced != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			if err == nil {
				err = errors.New("a server stopped before it served")
			}
			return err
		case <-ingressServing:
			ingressServing = nil
		case <-dnsSynced:
			dnsSynced = nil
		}
	}
	return nil
}

// newDNS builds the DNS handler and starts feeding it from the informers;
// the returned channel is closed by the first table built from synced
// caches, before which the handler would answer NXDOMAIN for every
// cluster name.
func newDNS(ctx context.Context, cfg Config, factory informers.SharedInformerFactory, reg prometheus.Registerer) (*dnsserver.Handler, <-chan struct{}, error) {
	log := cfg.Logger.With("component", "dns")
	opts := records.Options{Zone: cfg.ClusterDomain}
	empty, err := records.Build(opts, nil, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("--cluster-domain %q: %w", cfg.ClusterDomain, err)
	}
	var fwd dnsserver.Forwarder
	if ups, err := forward.FromResolvConf(cfg.ResolvConf); err != nil {
		log.Warn("no upstream resolvers: names outside the cluster will fail", "err", err)
	} else if f, err := forward.New(forward.Options{Upstreams: ups}); err == nil {
		fwd = f
	}
	h, err := dnsserver.NewHandler(empty, fwd, reg, log)
	if err != nil {
		return nil, nil, err
	}
	u := &firstUpdate{Updater: h, done: make(chan struct{})}
	go func() {
		if err := watch.Run(ctx, factory, opts, u, log); err != nil {
			log.Error("dns records stopped; answers keep the last table", "err", err)
		}
	}()
	return h, u.done, nil
}

// firstUpdate closes done after the first table reached the handler.
type firstUpdate struct {
	watch.Updater
	done   chan struct{}
	closed bool
}

func (u *firstUpdate) Update(t *records.Table) error {
	err := u.Updater.Update(t)
	if err == nil && !u.closed {
		u.closed = true
		close(u.done)
	}
	return err
}

func component(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}
