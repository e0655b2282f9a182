package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/skiffnet/skiff/controlplane/etcd"
	"github.com/skiffnet/skiff/controlplane/membership"
	"github.com/skiffnet/skiff/controlplane/pki"
)

// This file holds what makes a server one of several: joining, the
// embedded etcd as a cluster member, and the join service others use.

// prepareCluster decides whether this server is one of several and, for a
// server joining for the first time, fetches the cluster's keys and
// settings. It runs before credentials, which then issue this server's own
// certificates from the shared authorities.
func (s *Server) prepareCluster(ctx context.Context) error {
	settings, saved, err := membership.LoadSettings(s.cfg.DataDir)
	if err != nil {
		return err
	}
	switch {
	case s.cfg.JoinURL != "" && !etcd.HasData(s.cfg.DataDir):
		return s.fetchCluster(ctx)
	case saved:
		// Joined or initialised before: a restart needs no other server.
		s.clustered = true
		s.cfg.adopt(settings)
		return nil
	case s.cfg.ClusterInit:
		s.clustered = true
		return membership.SaveSettings(s.cfg.DataDir, s.cfg.settings())
	}
	return nil
}

func (s *Server) fetchCluster(ctx context.Context) error {
	tok, err := pki.ParseJoinToken(s.cfg.JoinToken)
	if err != nil {
		return err
	}
	if err := membership.CheckDataDir(s.cfg.DataDir, tok); err != nil {
		return err
	}
	s.progress("joining the cluster of %s", s.cfg.JoinURL)
	joiner, err := membership.Dial(ctx, s.cfg.JoinURL, s.cfg.JoinPort, tok)
	if err != nil {
		return err
	}
	settings, err := joiner.FetchBootstrap(ctx, s.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("--join %s: %w", s.cfg.JoinURL, err)
	}
	s.cfg.adopt(settings)
	if err := membership.SaveSettings(s.cfg.DataDir, settings); err != nil {
		return err
	}
	s.progress("took the cluster's keys and settings (cluster CIDR %s, service CIDR %s)", settings.ClusterCIDR, settings.ServiceCIDR)
	s.joiner, s.clustered = joiner, true
	return nil
}

// memberName names this server's etcd member: the host name alone is not
// unique when several servers share one (containers, test namespaces).
func (s *Server) memberName() string {
	host, _ := os.Hostname()
	host = strings.ToLower(strings.Split(host, ".")[0])
	if host == "" {
		host = "skiff"
	}
	return host + "-" + strings.NewReplacer(".", "-", ":", "-").Replace(s.cfg.AdvertiseAddress)
}

func (s *Server) etcdTLS() etcd.TLSFiles {
	return etcd.TLSFiles{Cert: s.pki.Etcd.CertPath, Key: s.pki.Etcd.KeyPath, CA: s.pki.EtcdCA.CertPath}
}

// clusterEtcd starts this server's member of the cluster's etcd: a new
// cluster (--cluster-init), a member with data (a restart), or a new
// learner added through the join service and promoted once in sync.
func (s *Server) clusterEtcd(ctx context.Context) (*etcd.Embedded, error) {
	cc := &etcd.ClusterConfig{Name: s.memberName(), Address: s.cfg.AdvertiseAddress, TLS: s.etcdTLS()}
	var learner uint64
	if s.joiner != nil {
		id, initial, err := s.addMember(ctx, cc)
		if err != nil {
			return nil, fmt.Errorf("--join %s: add this server to etcd: %w", s.cfg.JoinURL, err)
		}
		learner, cc.Initial = id, initial
		s.progress("added to etcd as learner %x; catching up", id)
	}
	dir := etcd.MemberDir(s.cfg.DataDir)
	s.progress("starting embedded etcd member %s in %s (peers at %s)", cc.Name, dir, cc.PeerURL(s.cfg.EtcdPort))
	e, err := etcd.Start(ctx, etcd.Config{DataDir: dir, ClientPort: s.cfg.EtcdPort, Logger: s.cfg.Logger, Cluster: cc,
		Progress: func(msg string) { s.progress("%s", msg) }})
	if err != nil {
		if learner != 0 {
			// Without its data the learner can never start: let the next
			// attempt add it afresh (the cluster's quorum never counted it).
			os.RemoveAll(dir)
		}
		return nil, err
	}
	members, err := etcd.OpenMembers(e.Endpoint(), ptr(s.etcdTLS()))
	if err != nil {
		e.Close()
		return nil, err
	}
	s.members = members
	if learner != 0 {
		if err := s.promote(ctx, learner); err != nil {
			e.Close()
			return nil, err
		}
	} else if err := members.EnsurePeerURL(ctx, cc.Name, cc.PeerURL(s.cfg.EtcdPort)); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// addMember adds this server's member as a learner. etcd refuses a
// member change while a member added moments ago is not yet connected
// ("unhealthy cluster"), as when servers join one right after another:
// that is retried for a minute.
func (s *Server) addMember(ctx context.Context, cc *etcd.ClusterConfig) (uint64, string, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		id, initial, err := s.joiner.AddMember(ctx, cc.Name, cc.PeerURL(s.cfg.EtcdPort))
		if err == nil || !strings.Contains(err.Error(), "unhealthy cluster") || time.Now().After(deadline) {
			return id, initial, err
		}
		s.progress("etcd is not taking members yet (a member added moments ago is still connecting); retrying")
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// promote waits until the learner holds the leader's log and is promoted:
// before that it serves no reads or writes, so the API server must wait.
func (s *Server) promote(ctx context.Context, id uint64) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := s.joiner.Promote(ctx, id)
		if err == nil {
			s.progress("etcd member %x promoted to voting member", id)
			return nil
		}
		if !errors.Is(err, etcd.ErrNotInSync) && time.Now().After(deadline) {
			return fmt.Errorf("promote this server's etcd member: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd member %x did not catch up in 5m: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// serveJoin runs the join service other servers use.
func (s *Server) serveJoin(ctx context.Context, done chan<- error) {
	svc := &membership.Service{
		Token: s.token, TLSDir: s.pki.Dir, Settings: s.cfg.settings(), Members: s.members,
		Logger: s.cfg.Logger.With("component", "join-service"),
	}
	addr := net.JoinHostPort(s.cfg.BindAddress, strconv.Itoa(s.cfg.JoinPort))
	s.progress("join service on %s: other servers join with --join https://%s:%d --token $(cat %s)",
		addr, s.cfg.AdvertiseAddress, s.cfg.HTTPSPort, s.TokenPath())
	go func() {
		done <- component("join service", svc.Serve(ctx, addr, s.pki.Server.CertPath, s.pki.Server.KeyPath))
	}()
}

func ptr[T any](v T) *T { return &v }

// etcdEndpointFile is where `skiff etcd-snapshot save` and `skiff
// etcd-member` find the running member.
func (s *Server) etcdEndpointFile() string { return filepath.Join(s.cfg.DataDir, "etcd-endpoint") }
