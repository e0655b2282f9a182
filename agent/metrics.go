package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skiffnet/skiff/agent/dataplane"
)

// serveMetrics serves the data plane's Prometheus metrics on
// --metrics-addr until ctx is done.
func (a *Agent) serveMetrics(ctx context.Context, reg *prometheus.Registry, done chan<- error) error {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	addr := a.cfg.MetricsAddr
	if addr == "" {
		addr = net.JoinHostPort(a.cfg.NodeIP, "10249")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	// The data plane process's metrics (DNS, ingress) join the agent's.
	all := prometheus.Gatherers{reg, dataplane.Gatherer(dataplane.SocketPath(a.cfg.NodeName), a.cfg.Logger)}
	mux.Handle("/metrics", promhttp.HandlerFor(all, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	context.AfterFunc(ctx, func() { srv.Close() })
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			done <- component("metrics", err)
		}
	}()
	a.progress("metrics on http://%s/metrics", ln.Addr())
	return nil
}
