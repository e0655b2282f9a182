// Package etcd runs the control plane's embedded etcd member, manages the
// members of a multi-server cluster, and takes and restores snapshots.
package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config places an embedded etcd member.
type Config struct {
	DataDir    string // the member's data directory
	ClientPort int    // loopback client port; the peer port is ClientPort+1
	Logger     *slog.Logger

	// Cluster, when set, makes the member one of several: it serves
	// peers and remote clients on the server's address over mutual TLS.
	// Without it the member is alone and listens on loopback only.
	Cluster *ClusterConfig
	// Progress hears a line every 30s while the member waits for its
	// cluster's quorum.
	Progress func(string)
}

// ClusterConfig is what a member of a multi-server etcd needs.
type ClusterConfig struct {
	Name    string // member name, unique in the cluster
	Address string // the server's advertise address
	TLS     TLSFiles
	// Initial is the "name=peerURL,..." list of a member joining an
	// existing cluster (the member add's answer); empty starts a new
	// one-member cluster that others can join. A member with data ignores
	// it and starts from its data.
	Initial string
}

// TLSFiles are the member's certificate (serving and client), key and the
// etcd CA that peers' and clients' certificates must chain to.
type TLSFiles struct{ Cert, Key, CA string }

// PeerURL is where other members reach this one.
func (c *ClusterConfig) PeerURL(clientPort int) string {
	return (&url.URL{Scheme: "https", Host: net.JoinHostPort(c.Address, strconv.Itoa(clientPort+1))}).String()
}

// ClientURL is where other servers' tools reach this member.
func (c *ClusterConfig) ClientURL(clientPort int) string {
	return (&url.URL{Scheme: "https", Host: net.JoinHostPort(c.Address, strconv.Itoa(clientPort))}).String()
}

// Embedded is a running embedded etcd member.
type Embedded struct {
	etcd     *embed.Etcd
	endpoint string
}

// Start starts the member and waits until it serves. The API server talks
// to its own member over loopback.
func Start(ctx context.Context, cfg Config) (*Embedded, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create etcd data dir: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = "skiff"
	ec.Dir = cfg.DataDir
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", cfg.ClientPort)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", cfg.ClientPort+1)}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	if cfg.Cluster != nil {
		if err := clusterConfig(ec, cfg.Cluster, cfg.ClientPort, client); err != nil {
			return nil, err
		}
	}
	ec.LogLevel = "error"
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Let the API server's own compaction run; keep the database bounded.
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	ec.QuotaBackendBytes = 8 << 30
	ec.EnableGRPCGateway = false
	ec.ListenMetricsUrls = nil

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd (client %s, peer %s): %w (is the port in use? pick another with --etcd-port)",
			ec.ListenClientUrls[0].Host, ec.ListenPeerUrls[0].Host, err)
	}
	if err := waitReady(ctx, e, cfg); err != nil {
		e.Close()
		return nil, err
	}
	return &Embedded{etcd: e, endpoint: client.String()}, nil
}

func waitReady(ctx context.Context, e *embed.Etcd, cfg Config) error {
	deadline := time.After(startTimeout(cfg))
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-e.Server.ReadyNotify():
			return nil
		case err := <-e.Err():
			return fmt.Errorf("embedded etcd: %w", err)
		case <-deadline:
			return fmt.Errorf("embedded etcd did not become ready in %s: %s", startTimeout(cfg), notReadyHint(cfg))
		case <-tick.C:
			if cfg.Progress != nil {
				cfg.Progress("etcd is waiting for " + notReadyHint(cfg))
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// startTimeout is how long a member may take to serve. A member of several
// serves only once a quorum of them answers, which after a full outage
// means waiting for the other servers to come back.
func startTimeout(cfg Config) time.Duration {
	if cfg.Cluster != nil {
		return 24 * time.Hour
	}
	return 60 * time.Second
}

func notReadyHint(cfg Config) string {
	if cfg.Cluster != nil {
		return "a quorum: a member serves only while most members of its cluster run; start the other servers"
	}
	return "see the etcd data dir for a damaged WAL"
}

// clusterConfig makes ec a member of several: peers and remote clients on
// the server's address with mutual TLS, the local API server still on the
// loopback client URL.
func clusterConfig(ec *embed.Config, c *ClusterConfig, clientPort int, loopback url.URL) error {
	peer, err := url.Parse(c.PeerURL(clientPort))
	if err != nil {
		return fmt.Errorf("--advertise-address %q: %w", c.Address, err)
	}
	remote, err := url.Parse(c.ClientURL(clientPort))
	if err != nil {
		return fmt.Errorf("--advertise-address %q: %w", c.Address, err)
	}
	ec.Name = c.Name
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	ec.ListenClientUrls = []url.URL{loopback, *remote}
	ec.AdvertiseClientUrls = []url.URL{*remote}
	tls := transport.TLSInfo{CertFile: c.TLS.Cert, KeyFile: c.TLS.Key, TrustedCAFile: c.TLS.CA, ClientCertAuth: true}
	ec.PeerTLSInfo, ec.ClientTLSInfo = tls, tls
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.ClusterState = embed.ClusterStateFlagNew
	if c.Initial != "" {
		ec.InitialCluster = c.Initial
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	return nil
}

// Endpoint is the URL clients use.
func (e *Embedded) Endpoint() string { return e.endpoint }

// Err reports a fatal error of the running member.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the member.
func (e *Embedded) Close() { e.etcd.Close() }

// MemberDir is where a data dir keeps its embedded etcd.
func MemberDir(dataDir string) string { return filepath.Join(dataDir, "etcd") }

// HasData reports whether dataDir already holds an etcd member.
func HasData(dataDir string) bool {
	_, err := os.Stat(filepath.Join(MemberDir(dataDir), "member", "wal"))
	return err == nil
}
