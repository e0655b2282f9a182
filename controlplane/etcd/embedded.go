// Package etcd runs the control plane's embedded etcd and takes and restores
// its snapshots.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config places an embedded single-member etcd.
type Config struct {
	DataDir    string // the member's data directory
	ClientPort int    // loopback client port; the peer port is ClientPort+1
	Logger     *slog.Logger
}

// Embedded is a running embedded etcd member.
type Embedded struct {
	etcd     *embed.Etcd
	endpoint string
}

// Start starts the member and waits until it serves. etcd listens on loopback
// only: the API server is its one client.
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
		return nil, fmt.Errorf("start embedded etcd on %s: %w (is the port in use? pick another with --etcd-port)", client.Host, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd did not become ready in 60s; see the etcd data dir for a damaged WAL")
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Embedded{etcd: e, endpoint: client.String()}, nil
}

// Endpoint is the URL clients use.
func (e *Embedded) Endpoint() string { return e.endpoint }

// Err reports a fatal error of the running member.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the member.
func (e *Embedded) Close() { e.etcd.Close() }

// MemberDir is where a data dir keeps its embedded etcd.
func MemberDir(dataDir string) string { return filepath.Join(dataDir, "etcd") }
