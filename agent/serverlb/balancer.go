// Package serverlb is the node agent's client-side load balancer over the
// cluster's API servers: the kubelet and the data plane reach the API at
// its loopback address, and it forwards each TCP connection (TLS passes
// through untouched) to one server that answers, so a node keeps working
// when one server of several dies.
package serverlb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Options configure a Balancer.
type Options struct {
	ListenAddr string   // e.g. 127.0.0.1:6444
	Servers    []string // seed list, host:port
	// StatePath keeps the last known list, so an agent restarted while
	// its seed server is down still finds the others; "" keeps none.
	StatePath     string
	Logger        *slog.Logger
	DialTimeout   time.Duration // default 2s
	CheckInterval time.Duration // default 1s
}

// Balancer forwards connections to the current healthy server.
type Balancer struct {
	opts     Options
	listener net.Listener

	mu      sync.Mutex
	servers []*server
	current *server
}

// server is one API server and the connections proxied to it.
type server struct {
	addr    string
	healthy bool
	fails   int // failed checks in a row
	conns   map[net.Conn]struct{}
}

// New checks the options, loads the kept list and binds the listener.
func New(o Options) (*Balancer, error) {
	if o.DialTimeout == 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	addrs := slices.Clone(o.Servers)
	if kept, err := load(o.StatePath); err != nil {
		o.Logger.Warn("ignoring the kept API server list", "path", o.StatePath, "err", err)
	} else {
		addrs = append(addrs, kept...)
	}
	if len(addrs) == 0 {
		return nil, errors.New("no API server: give --server https://HOST:6443")
	}
	for _, a := range addrs {
		if err := checkAddr(a); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("tcp", o.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (another agent on this machine? give each its own --apiserver-lb-addr)", o.ListenAddr, err)
	}
	b := &Balancer{opts: o, listener: l}
	b.setLocked(dedupe(addrs))
	return b, nil
}

func checkAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("API server address %q: want HOST:PORT", a)
	}
	return nil
}

func dedupe(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// Addr is the bound listen address.
func (b *Balancer) Addr() string { return b.listener.Addr().String() }

// URL is the API URL clients use.
func (b *Balancer) URL() string { return "https://" + b.Addr() }

// Servers is the current list.
func (b *Balancer) Servers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, len(b.servers))
	for i, s := range b.servers {
		out[i] = s.addr
	}
	return out
}

// SetServers replaces the list; an empty list is ignored, so a node never
// forgets every server. Connections to servers no longer listed close.
func (b *Balancer) SetServers(addrs []string) {
	addrs = dedupe(addrs)
	for _, a := range addrs {
		if checkAddr(a) != nil {
			return
		}
	}
	if len(addrs) == 0 || slices.Equal(addrs, b.Servers()) {
		return
	}
	b.mu.Lock()
	b.setLocked(addrs)
	b.mu.Unlock()
	b.opts.Logger.Info("API servers", "servers", addrs)
	if err := save(b.opts.StatePath, addrs); err != nil {
		b.opts.Logger.Warn("keeping the API server list", "path", b.opts.StatePath, "err", err)
	}
}

func (b *Balancer) setLocked(addrs []string) {
	old := map[string]*server{}
	for _, s := range b.servers {
		old[s.addr] = s
	}
	b.servers = nil
	for _, a := range addrs {
		s, ok := old[a]
		if !ok {
			s = &server{addr: a, healthy: true, conns: map[net.Conn]struct{}{}}
		}
		delete(old, a)
		b.servers = append(b.servers, s)
	}
	for _, s := range old {
		closeAll(s)
		if b.current == s {
			b.current = nil
		}
	}
	if b.current == nil {
		b.current = b.servers[0]
	}
}

func load(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var addrs []string
	return addrs, json.Unmarshal(data, &addrs)
}

func save(path string, addrs []string) error {
	if path == "" {
		return nil
	}
	data, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Run serves until ctx is done, then closes everything.
func (b *Balancer) Run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		b.listener.Close()
	}()
	go b.check(ctx)
	defer b.closeAllServers()
	for {
		conn, err := b.listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", b.Addr(), err)
		}
		go b.forward(ctx, conn)
	}
}

func (b *Balancer) closeAllServers() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.servers {
		closeAll(s)
	}
}

func closeAll(s *server) {
	for c := range s.conns {
		c.Close()
	}
}

// order is the current server first, then the healthy others, then the
// unhealthy ones: every server is tried before a client is turned away.
func (b *Balancer) order() []*server {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := []*server{}
	if b.current != nil && b.current.healthy {
		out = append(out, b.current)
	}
	for _, healthy := range []bool{true, false} {
		for _, s := range b.servers {
			if s.healthy == healthy && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

func (b *Balancer) forward(ctx context.Context, client net.Conn) {
	d := net.Dialer{Timeout: b.opts.DialTimeout}
	for _, s := range b.order() {
		up, err := d.DialContext(ctx, "tcp", s.addr)
		if err != nil {
			b.markDown(s, err)
			continue
		}
		if !b.track(s, up, client) {
			up.Close()
			continue // removed from the list meanwhile
		}
		pipe(client, up)
		b.untrack(s, up, client)
		return
	}
	client.Close()
}

func (b *Balancer) track(s *server, conns ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Contains(b.servers, s) {
		return false
	}
	for _, c := range conns {
		s.conns[c] = struct{}{}
	}
	if b.current != s && (b.current == nil || !b.current.healthy) {
		b.switchTo(s)
	}
	return true
}

func (b *Balancer) untrack(s *server, conns ...net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range conns {
		delete(s.conns, c)
	}
}

// pipe copies both ways until both directions are done, passing on
// half-closes, then closes both.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}
