package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffnet/skiff/cni/routes"
	"github.com/skiffnet/skiff/controlplane/bootstrap"
	"github.com/skiffnet/skiff/controlplane/components"
	"github.com/skiffnet/skiff/controlplane/etcd"
	"github.com/skiffnet/skiff/controlplane/localpath"
	"github.com/skiffnet/skiff/controlplane/membership"
	"github.com/skiffnet/skiff/controlplane/pki"
	"github.com/skiffnet/skiff/footprint"
	lbcontroller "github.com/skiffnet/skiff/loadbalancer/controller"
)

// Server is one control-plane process.
type Server struct {
	cfg   Config
	pki   *pki.Bundle
	token pki.JoinToken
	start time.Time

	// clustered: one of several servers on a shared etcd (--cluster-init,
	// --join, or either on an earlier start).
	clustered bool
	joiner    *membership.Client // set while joining for the first time
	members   *etcd.Members      // the etcd membership, when clustered
}

// New checks cfg and the machine (data dir writable, port free) so that
// `skiff server` fails at once with one line saying what to fix.
func New(cfg Config) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkWritable(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := checkPortFree(cfg.BindAddress, cfg.HTTPSPort, "--https-port"); err != nil {
		return nil, err
	}
	if len(cfg.EtcdServers) == 0 {
		if err := checkPortFree("127.0.0.1", cfg.EtcdPort, "--etcd-port"); err != nil {
			return nil, err
		}
	}
	return &Server{cfg: cfg, start: time.Now()}, nil
}

// SetLogger sets where structured logs go; call it before Run.
func (s *Server) SetLogger(l *slog.Logger) { s.cfg.Logger = l }

// AdminKubeconfig is the admin kubeconfig's path (mode 0600).
func (s *Server) AdminKubeconfig() string { return filepath.Join(s.cfg.DataDir, "kubeconfig") }

// TokenPath is where the node join token is kept.
func (s *Server) TokenPath() string { return filepath.Join(s.cfg.DataDir, "token") }

// Token is the node join token (valid after Run has bootstrapped credentials).
func (s *Server) Token() pki.JoinToken { return s.token }

// Run brings the control plane up, reports readiness through ready (closed
// once), and serves until ctx is done or a component fails.
func (s *Server) Run(ctx context.Context, ready chan<- struct{}) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := s.prepareCluster(ctx); err != nil {
		return err
	}
	if s.clustered {
		s.restartOnFatal()
	}
	if err := s.credentials(); err != nil {
		return err
	}
	etcdServers, stopEtcd, err := s.etcd(ctx)
	if err != nil {
		return err
	}
	defer stopEtcd()

	done := make(chan error, 8)
	if s.clustered {
		s.serveJoin(ctx, done)
	}
	s.progress("starting kube-apiserver on https://%s:%d", s.cfg.AdvertiseAddress, s.cfg.HTTPSPort)
	go func() {
		done <- component("kube-apiserver", components.RunAPIServer(ctx, s.apiserverArgs(etcdServers)))
	}()

	client, err := s.adminClient()
	if err != nil {
		return err
	}
	if err := waitReady(ctx, client, done); err != nil {
		return err
	}
	// The controller manager and the scheduler need nothing the steps
	// below create, and the node's TLS bootstrap and PodCIDR wait on the
	// controller manager: start them while the cluster objects go in.
	s.progress("starting kube-controller-manager and kube-scheduler")
	go func() {
		done <- component("kube-controller-manager", components.RunControllerManager(ctx, s.controllerManagerArgs()))
	}()
	go func() { done <- component("kube-scheduler", components.RunScheduler(ctx, s.schedulerArgs())) }()

	s.progress("creating cluster objects (kube-dns Service, node bootstrap RBAC and token)")
	if err := bootstrap.Apply(ctx, client, bootstrap.Config{
		ClusterDNS: s.cfg.ClusterDNS, Token: s.token,
	}); err != nil {
		return fmt.Errorf("bootstrap cluster objects: %w", err)
	}
	s.progress("installing the Gateway API CRDs and the skiff IngressClass and GatewayClass")
	rc, err := clientcmd.BuildConfigFromFlags("", s.AdminKubeconfig())
	if err != nil {
		return err
	}
	if err := bootstrap.Ingress(ctx, rc); err != nil {
		return err
	}
	if err := s.runControllers(ctx, client, done); err != nil {
		return err
	}
	s.progress("ready in %.1fs; kubeconfig: %s (try: skiff kubectl get nodes)", time.Since(s.start).Seconds(), s.AdminKubeconfig())
	if ready != nil {
		close(ready)
	}
	footprint.ReleaseStartup()
	select {
	case <-ctx.Done():
		return nil
	case err := <-done:
		return err
	}
}

func (s *Server) credentials() error {
	s.progress("preparing certificates and keys in %s", filepath.Join(s.cfg.DataDir, "tls"))
	hostname, _ := os.Hostname()
	names := pki.Names{
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc." + s.cfg.ClusterDomain},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, firstServiceIP(s.cfg.ServiceCIDR), net.ParseIP(s.cfg.AdvertiseAddress)},
	}
	if hostname != "" {
		names.DNSNames = append(names.DNSNames, hostname)
	}
	b, err := pki.Ensure(filepath.Join(s.cfg.DataDir, "tls"), names)
	if err != nil {
		return err
	}
	s.pki = b
	if s.token, err = pki.LoadOrCreateJoinToken(s.TokenPath(), b.CA.Cert); err != nil {
		return err
	}
	return s.writeKubeconfigs()
}

func (s *Server) etcd(ctx context.Context) ([]string, func(), error) {
	if len(s.cfg.EtcdServers) > 0 {
		s.progress("using external etcd %v", s.cfg.EtcdServers)
		return s.cfg.EtcdServers, func() {}, nil
	}
	var e *etcd.Embedded
	var err error
	if s.clustered {
		e, err = s.clusterEtcd(ctx)
	} else {
		dir := etcd.MemberDir(s.cfg.DataDir)
		s.progress("starting embedded etcd in %s", dir)
		e, err = etcd.Start(ctx, etcd.Config{DataDir: dir, ClientPort: s.cfg.EtcdPort, Logger: s.cfg.Logger})
	}
	if err != nil {
		return nil, nil, err
	}
	// `skiff etcd-snapshot save` finds the running member through this file.
	if err := pki.WriteFile(s.etcdEndpointFile(), []byte(e.Endpoint()+"\n"), 0o600); err != nil {
		e.Close()
		return nil, nil, err
	}
	stop := func() {
		if s.members != nil {
			s.members.Close()
		}
		e.Close()
	}
	return []string{e.Endpoint()}, stop, nil
}

func (s *Server) adminClient() (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", s.AdminKubeconfig())
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", s.AdminKubeconfig(), err)
	}
	return kubernetes.NewForConfig(rc)
}

func (s *Server) progress(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(s.cfg.Out, "skiff server: "+msg)
	// The log gets each step with the time since start, to show where
	// start-up time goes.
	s.cfg.Logger.Info(msg, "since_start", time.Since(s.start).Round(time.Millisecond))
}

// waitReady polls /readyz until the API server answers ok or fails.
func waitReady(ctx context.Context, client *kubernetes.Clientset, done <-chan error) error {
	deadline := time.After(3 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("kube-apiserver not ready after 3m: %v; see the server log", last)
		case <-tick.C:
			body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			if err == nil && string(body) == "ok" {
				return nil
			}
			last = err
		}
	}
}

func component(name string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s stopped", name)
	}
	return fmt.Errorf("%s: %w", name, err)
}

func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--data-dir %s cannot be created: %w; pick a writable directory", dir, errors.Unwrap(err))
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("--data-dir %s is not writable: %w; pick a writable directory or run as root", dir, errors.Unwrap(err))
	}
	f.Close()
	return os.Remove(f.Name())
}

func checkPortFree(host string, port int, flag string) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s %d: %s is already in use (another skiff server?); stop that process or pick another port", flag, port, addr)
	}
	return l.Close()
}

// runControllers starts Skiff's own controllers: the pod routes of a
// server without an agent on every server, the cluster-wide ones
// (local-path provisioner, load balancer allocator) on the one server that
// leads.
func (s *Server) runControllers(ctx context.Context, client kubernetes.Interface, done chan<- error) error {
	if s.cfg.RoutePods {
		factory := informers.NewSharedInformerFactory(client, 0)
		if err := s.routePods(ctx, client, factory, done); err != nil {
			return err
		}
		factory.Start(ctx.Done())
	}
	rc, err := clientcmd.BuildConfigFromFlags("", s.AdminKubeconfig())
	if err != nil {
		return err
	}
	s.leading(ctx, client, done, func(ctx context.Context) error {
		factory := informers.NewSharedInformerFactory(client, 0)
		lp, err := localpath.New(client, factory, s.cfg.Logger.With("controller", "local-path"))
		if err != nil {
			return err
		}
		// The allocator of LoadBalancer Services and Gateways
		// (loadbalancer/controller, docs/loadbalancer.md) must run once
		// per cluster, so it lives here and not in the agents.
		lb, err := lbcontroller.ForServer(ctx, rc, s.cfg.lbFlags(), s.cfg.Logger.With("controller", "loadbalancer"))
		if err != nil {
			return fmt.Errorf("load balancer allocator: %w", err)
		}
		factory.Start(ctx.Done())
		errs := make(chan error, 2)
		go func() { errs <- component("local-path provisioner", lp.Run(ctx)) }()
		go func() { errs <- component("load balancer allocator", lb.Run(ctx)) }()
		return <-errs
	})
	return nil
}

// routePods runs the pod route controller for a control plane without a
// node: the API server dials pods directly (pods/proxy, services/proxy,
// webhooks and aggregated APIs through --enable-aggregator-routing), and
// the replies come back over the same link because pods see its real
// address. Routes go via each node's address, so the nodes must be on a
// link of this machine; docs/architecture.md says why this was chosen over
// an egress tunnel through the agents.
func (s *Server) routePods(ctx context.Context, client kubernetes.Interface, factory informers.SharedInformerFactory, done chan<- error) error {
	addr, err := netip.ParseAddr(s.cfg.AdvertiseAddress)
	if err != nil || !addr.Is4() {
		return fmt.Errorf("--advertise-address %q: the server routes pod ranges from it and needs an IPv4 address on the nodes' link", s.cfg.AdvertiseAddress)
	}
	rc, err := routes.New(routes.Options{
		Client: client, Informers: factory, NodeIP: addr, ServerOnly: true,
		Logger: s.cfg.Logger.With("controller", "pod-routes"),
	})
	if err != nil {
		return err
	}
	s.progress("routing the nodes' pod ranges from %s (no agent in this process)", addr)
	go func() { done <- component("pod routes", rc.Run(ctx)) }()
	return nil
}
