package cluster

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Server is one control-plane server of a multi-server cluster
// (Options.Servers > 1): its own namespace on the bridge, data dir and
// process.
type Server struct {
	c      *Cluster
	Index  int
	IP     string
	NS     namespace
	Dir    string
	proc   *process
	starts int
}

// ServerIP is the bridge address of server i (counting from 0) of a
// multi-server cluster.
func ServerIP(i int) string { return fmt.Sprintf("172.30.0.%d", 2+i) }

// Hostname is the host name the server runs under.
func (s *Server) Hostname() string { return fmt.Sprintf("%s-server%d", s.c.ID, s.Index+1) }

// URL is the server's API URL.
func (s *Server) URL() string { return "https://" + s.IP + ":6443" }

// Args is the server's command line: the first initialises the cluster,
// the others join it through the first.
func (s *Server) Args() []string {
	args := []string{"server", "--data-dir", s.Dir, "--advertise-address", s.IP, "--disable-agent"}
	if s.Index == 0 {
		args = append(args, "--cluster-init")
		if s.c.opts.GatewayCIDR != "" {
			args = append(args, "--gateway-cidr", s.c.opts.GatewayCIDR)
		}
	} else {
		args = append(args, "--join", s.c.Servers[0].URL(), "--token", s.c.Token())
	}
	return append(args, s.c.opts.ServerArgs...)
}

// Start starts (or restarts) the server and waits until it is ready.
func (s *Server) Start() {
	s.c.t.Helper()
	s.starts++
	log := filepath.Join(s.c.Dir, fmt.Sprintf("server%d-%d.out", s.Index+1, s.starts))
	// Each server is a machine of its own: its own host name too (the API
	// server names its identity Lease after it, and etcd members after
	// it), as every real multi-server cluster has.
	args := append([]string{"--uts", "--", "sh", "-c", `hostname "$0" && exec "$@"`, s.Hostname(), s.c.Bin}, s.Args()...)
	s.proc = start(s.c.t, s.NS, "", log, "unshare", args...)
	if err := s.proc.waitFor("ready in", 5*time.Minute); err != nil {
		s.c.t.Fatal(err)
	}
}

// Stop ends the server with SIGTERM (a restart).
func (s *Server) Stop() { s.proc.stop(syscall.SIGTERM) }

// Kill ends the server with SIGKILL (a crash or a lost machine).
func (s *Server) Kill() { s.proc.stop(syscall.SIGKILL) }

// Running reports whether the server's process runs.
func (s *Server) Running() bool { return s.proc != nil && !s.proc.hasExited() }

// Output is everything the server's latest start printed.
func (s *Server) Output() string { return s.proc.output() }

// Exec runs a command in the server's namespace.
func (s *Server) Exec(name string, args ...string) (string, error) {
	return output(s.NS, "", name, args...)
}

// Client is an admin client of this server alone.
func (s *Server) Client() kubernetes.Interface {
	s.c.t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(s.Dir, "kubeconfig"))
	if err != nil {
		s.c.t.Fatal(err)
	}
	rc.Dial = dialer(s.NS)
	// client-go's default 5 QPS would time the client, not the server.
	rc.QPS, rc.Burst = 1000, 1000
	return kubernetes.NewForConfigOrDie(rc)
}

func (c *Cluster) startServers() {
	c.t.Helper()
	for i := range c.opts.Servers {
		dir := filepath.Join(c.Dir, "server")
		if i > 0 {
			dir = filepath.Join(c.Dir, fmt.Sprintf("server%d", i+1))
		}
		s := &Server{c: c, Index: i, IP: ServerIP(i), Dir: dir,
			NS: attach(c.t, c.Infra, c.ID, fmt.Sprintf("s%d", i+1), fmt.Sprintf("%s-s%d", c.ID, i+1), ServerIP(i))}
		c.Servers = append(c.Servers, s)
		s.Start()
	}
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		c.t.Fatal(err)
	}
	// The admin kubeconfig names 127.0.0.1, which is every server in its
	// own namespace: dial the first that runs.
	rc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialer(c.liveServer().NS)(ctx, network, addr)
	}
	c.restCfg = rc
}

// liveServer is the first server whose process runs.
func (c *Cluster) liveServer() *Server {
	for _, s := range c.Servers {
		if s.Running() {
			return s
		}
	}
	return c.Servers[0]
}

// apiNamespace is where the admin kubeconfig's 127.0.0.1 reaches an API
// server.
func (c *Cluster) apiNamespace() namespace {
	if len(c.Servers) > 0 {
		return c.liveServer().NS
	}
	return c.Infra
}

// members is `skiff etcd-member list` on the first running server.
func (c *Cluster) members(t testing.TB) (string, error) {
	s := c.liveServer()
	return s.Exec(c.Bin, "etcd-member", "list", "--data-dir", s.Dir)
}

// WaitMembers waits until n members are listed, every one a healthy
// voting member.
func (c *Cluster) WaitMembers(t testing.TB, n int) {
	t.Helper()
	var out string
	if err := poll(3*time.Minute, func() bool {
		var err error
		out, err = c.members(t)
		rows := strings.Split(strings.TrimSpace(out), "\n")
		if err != nil || len(rows) != n+1 {
			return false
		}
		for _, r := range rows[1:] {
			if !strings.Contains(r, " healthy") || strings.Contains(r, "learner") {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("want %d healthy voting etcd members; `skiff etcd-member list` says:\n%s", n, out)
	}
	t.Logf("etcd members:\n%s", out)
}

// EtcdLeader is the server whose member leads etcd.
func (c *Cluster) EtcdLeader(t testing.TB) *Server {
	t.Helper()
	out, err := c.members(t)
	if err != nil {
		t.Fatalf("skiff etcd-member list: %v\n%s", err, out)
	}
	for _, row := range strings.Split(out, "\n") {
		if !strings.Contains(row, " leader ") {
			continue
		}
		for _, s := range c.Servers {
			if strings.Contains(row, "https://"+s.IP+":") {
				return s
			}
		}
	}
	t.Fatalf("no leader in:\n%s", out)
	return nil
}
