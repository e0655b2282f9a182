package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffnet/skiff/dns/forward"
	"github.com/skiffnet/skiff/dns/records"
	"github.com/skiffnet/skiff/dns/server"
	"github.com/skiffnet/skiff/dns/watch"
)

// serveSkiff is the `serve-skiff` mode of this program: Skiff's cluster
// DNS wired as the agent wires it (agent/dns.go: informers → watch.Run →
// Handler.ListenAndServe, other names to the resolvers of /etc/resolv.conf),
// but with its informers on the benchmark server's admin kubeconfig and
// listening on a loopback port. The benchmark runs it pinned to one core.
func serveSkiff(args []string) error {
	fs := flag.NewFlagSet("serve-skiff", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig of the API server to watch")
	listen := fs.String("listen", "127.0.0.1:5353", "address to answer DNS on (UDP and TCP)")
	fs.Parse(args)

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("load %s: %w", *kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	factory := informers.NewSharedInformerFactory(cs, 0)

	opts := records.Options{}
	empty, err := records.Build(opts, nil, nil)
	if err != nil {
		return err
	}
	var fwd server.Forwarder
	if ups, err := forward.FromResolvConf("/etc/resolv.conf"); err != nil {
		log.Warn("no upstream resolvers: names outside the cluster will fail", "err", err)
	} else if f, err := forward.New(forward.Options{Upstreams: ups}); err == nil {
		fwd = f
	}
	// The agent registers the handler's metrics, so they are counted here too.
	h, err := server.NewHandler(empty, fwd, prometheus.NewRegistry(), log)
	if err != nil {
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- h.ListenAndServe(ctx, *listen) }()
	go func() { errs <- watch.Run(ctx, factory, opts, h, log) }()
	log.Info("serving", "addr", *listen)
	// Either part ending (an error, or SIGTERM from the benchmark) ends both.
	err = <-errs
	cancel()
	return errors.Join(err, <-errs)
}
