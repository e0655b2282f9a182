package etcd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	utlsnapshot "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// Save writes a snapshot of the etcd behind endpoints to file and returns the
// etcd version that wrote it.
func Save(ctx context.Context, endpoints []string, file string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", fmt.Errorf("create snapshot dir: %w", err)
	}
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	version, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), cfg, file)
	if err != nil {
		return "", fmt.Errorf("save snapshot from %v: %w (is `skiff server` running with this data dir?)", endpoints, err)
	}
	return version, nil
}

// Restore writes a new single-member etcd under dataDir from a snapshot file,
// for a server that then starts with --data-dir dataDir.
func Restore(file, dataDir string, clientPort int) error {
	if _, err := os.Stat(file); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	member := MemberDir(dataDir)
	if _, err := os.Stat(member); err == nil {
		return fmt.Errorf("%s already exists: restore into a new --data-dir, so nothing is overwritten", member)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dataDir, err)
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", clientPort+1)
	err := utlsnapshot.NewV3(zap.NewNop()).Restore(utlsnapshot.RestoreConfig{
		SnapshotPath:        file,
		Name:                "skiff",
		OutputDataDir:       member,
		PeerURLs:            []string{peer},
		InitialCluster:      "skiff=" + peer,
		InitialClusterToken: "etcd-cluster",
		// Bump past any revision a watching client saw, so clients resync
		// instead of trusting stale caches.
		RevisionBump:  1_000_000,
		MarkCompacted: true,
	})
	if err != nil {
		return fmt.Errorf("restore %s into %s: %w", file, member, err)
	}
	return nil
}
