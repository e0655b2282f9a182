// Package profiling serves the Go runtime's pprof profiles of a skiff
// process on a loopback address, so that a user can take the heap and CPU
// profiles the footprint benchmark takes (docs/operations.md).
package profiling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"time"
)

// Serve serves net/http/pprof at addr until ctx is done; an empty addr
// serves nothing. It listens before returning so that a taken port or a
// non-loopback address fails the command at start, not later in a log.
// It returns the address it listens on (useful with port 0).
func Serve(ctx context.Context, addr string, logger *slog.Logger) (string, error) {
	if addr == "" {
		return "", nil
	}
	if err := CheckAddr(addr); err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("--profile-addr %s: %w", addr, err)
	}
	// A mux of its own: upstream packages may register debug handlers on
	// http.DefaultServeMux, which must not become reachable through this port.
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("profile endpoint stopped", "addr", addr, "err", err)
		}
	}()
	url := "http://" + l.Addr().String() + "/debug/pprof/"
	logger.Info("serving pprof profiles", "url", url)
	return l.Addr().String(), nil
}

// CheckAddr refuses addresses other machines could reach: a heap profile
// or a goroutine dump shows what the process holds in memory.
func CheckAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--profile-addr %q: want HOST:PORT such as 127.0.0.1:6060: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("--profile-addr %q: profiles show the process's memory, so only a loopback address (127.0.0.1 or [::1]) is allowed", addr)
	}
	return nil
}
