// Package healthcheck answers the healthCheckNodePorts of Services with
// externalTrafficPolicy Local, as kube-proxy does: an external load
// balancer probes every node over HTTP and sends traffic only to nodes
// that answer 200, the ones with a local ready endpoint; the others answer
// 503.
package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Server holds one HTTP listener per health check port.
type Server struct {
	addr netip.Addr
	log  *slog.Logger

	mu        sync.Mutex
	ports     map[types.NamespacedName]uint16
	listeners map[uint16]*listener
}

type listener struct {
	srv *http.Server
	ln  net.Listener

	mu      sync.Mutex
	service types.NamespacedName
	local   int
}

// New returns a Server listening on addr, or on every address when addr
// is the zero value (kube-proxy's default).
func New(addr netip.Addr, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{addr: addr, log: log, ports: map[types.NamespacedName]uint16{}, listeners: map[uint16]*listener{}}
}

// Sync sets Service n's health check port and its number of local ready
// endpoints; port 0 removes the Service's listener.
func (s *Server) Sync(n types.NamespacedName, port uint16, local int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.ports[n]; ok && old != port {
		s.closeLocked(old)
		delete(s.ports, n)
	}
	if port == 0 {
		return nil
	}
	l, ok := s.listeners[port]
	if !ok {
		var err error
		if l, err = s.listen(port); err != nil {
			return err
		}
		s.listeners[port] = l
	}
	l.mu.Lock()
	l.service, l.local = n, local
	l.mu.Unlock()
	s.ports[n] = port
	return nil
}

func (s *Server) listen(port uint16) (*listener, error) {
	host := ""
	if s.addr.IsValid() {
		host = s.addr.String()
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
	if err != nil {
		return nil, fmt.Errorf("health check port %d: %w", port, err)
	}
	l := &listener{ln: ln}
	l.srv = &http.Server{Handler: l, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("health check server", "port", port, "err", err)
		}
	}()
	return l, nil
}

// Addr is where port's listener listens, for tests.
func (s *Server) Addr(port uint16) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.listeners[port]; ok {
		return l.ln.Addr()
	}
	return nil
}

func (s *Server) closeLocked(port uint16) {
	if l, ok := s.listeners[port]; ok {
		l.srv.Close()
		delete(s.listeners, port)
	}
}

// Close stops every listener.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for port := range s.listeners {
		s.closeLocked(port)
	}
	clear(s.ports)
	return nil
}

// Shutdown stops every listener, letting probes in flight finish.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for port, l := range s.listeners {
		errs = append(errs, l.srv.Shutdown(ctx))
		delete(s.listeners, port)
	}
	clear(s.ports)
	return errors.Join(errs...)
}

// reply is kube-proxy's body, which some load balancers log.
type reply struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (l *listener) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	l.mu.Lock()
	n, count := l.service, l.local
	l.mu.Unlock()
	var r reply
	r.Service.Namespace, r.Service.Name = n.Namespace, n.Name
	r.LocalEndpoints, r.ServiceProxyHealthy = count, true
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
	if count > 0 {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(r)
}
