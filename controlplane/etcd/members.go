package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Members changes and reads the cluster's membership through this
// server's own member, on loopback.
type Members struct {
	client *clientv3.Client
	tls    *tls.Config // for other members' client URLs; nil: no status of remote members
}

// OpenMembers connects to the local member at endpoint. files, when set,
// is the identity used to ask remote members for their status.
func OpenMembers(endpoint string, files *TLSFiles) (*Members, error) {
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("connect to the embedded etcd at %s: %w", endpoint, err)
	}
	m := &Members{client: client}
	if files != nil {
		info := transport.TLSInfo{CertFile: files.Cert, KeyFile: files.Key, TrustedCAFile: files.CA}
		if m.tls, err = info.ClientConfig(); err != nil {
			client.Close()
			return nil, fmt.Errorf("etcd client TLS from %s: %w", files.Cert, err)
		}
	}
	return m, nil
}

// Close ends the connection.
func (m *Members) Close() error { return m.client.Close() }

// Member is one etcd member as `skiff etcd-member list` shows it.
type Member struct {
	ID        uint64
	Name      string
	PeerURL   string
	ClientURL string
	Learner   bool
	Leader    bool
	// Healthy: the member answered a status request just now.
	Healthy bool
	Err     string // why it is not healthy
}

// List returns every member, asking each for its status in parallel.
func (m *Members) List(ctx context.Context) ([]Member, error) {
	resp, err := m.client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	out := make([]Member, len(resp.Members))
	done := make(chan struct{}, len(resp.Members))
	for i, pm := range resp.Members {
		out[i] = Member{ID: pm.ID, Name: pm.Name, Learner: pm.IsLearner}
		if len(pm.PeerURLs) > 0 {
			out[i].PeerURL = pm.PeerURLs[0]
		}
		if len(pm.ClientURLs) > 0 {
			out[i].ClientURL = pm.ClientURLs[0]
		}
		go func(mem *Member) {
			defer func() { done <- struct{}{} }()
			m.status(ctx, mem)
		}(&out[i])
	}
	for range resp.Members {
		<-done
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (m *Members) status(ctx context.Context, mem *Member) {
	if mem.ClientURL == "" {
		mem.Err = "not started yet"
		return
	}
	cfg := clientv3.Config{Endpoints: []string{mem.ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()}
	if strings.HasPrefix(mem.ClientURL, "https://") {
		if m.tls == nil {
			mem.Err = "no TLS identity to ask it"
			return
		}
		cfg.TLS = m.tls
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		mem.Err = err.Error()
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := c.Status(ctx, mem.ClientURL)
	if err != nil {
		mem.Err = err.Error()
		return
	}
	mem.Healthy = len(st.Errors) == 0
	mem.Err = strings.Join(st.Errors, "; ")
	mem.Leader = st.Leader == mem.ID
}

// AddLearner adds a non-voting member at peerURL and returns its ID and
// the initial-cluster list it must start with. A member already at
// peerURL (a server rejoining with an empty data dir) is removed first.
func (m *Members) AddLearner(ctx context.Context, name, peerURL string) (uint64, string, error) {
	list, err := m.client.MemberList(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("list etcd members: %w", err)
	}
	for _, pm := range list.Members {
		if slices.Contains(pm.PeerURLs, peerURL) || (pm.Name == name && name != "") {
			if _, err := m.client.MemberRemove(ctx, pm.ID); err != nil {
				return 0, "", fmt.Errorf("remove the old member %q at %s before it rejoins: %w", pm.Name, peerURL, err)
			}
		}
	}
	resp, err := m.client.MemberAddAsLearner(ctx, []string{peerURL})
	if err != nil {
		return 0, "", fmt.Errorf("add etcd member %s: %w", peerURL, err)
	}
	var initial []string
	for _, pm := range resp.Members {
		n := pm.Name
		if pm.ID == resp.Member.ID {
			n = name
		}
		for _, u := range pm.PeerURLs {
			initial = append(initial, n+"="+u)
		}
	}
	return resp.Member.ID, strings.Join(initial, ","), nil
}

// ErrNotInSync is a learner that does not hold the leader's log yet.
var ErrNotInSync = errors.New("the new member is still catching up")

// Promote makes learner id a voting member.
func (m *Members) Promote(ctx context.Context, id uint64) error {
	_, err := m.client.MemberPromote(ctx, id)
	if errors.Is(err, rpctypes.ErrMemberLearnerNotReady) || (err != nil && strings.Contains(err.Error(), "not in sync")) {
		return ErrNotInSync
	}
	if err != nil && strings.Contains(err.Error(), "not a learner") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("promote etcd member %x: %w", id, err)
	}
	return nil
}

// Remove removes the member called name. A cluster that has just lost a
// member may be electing a leader or still count the member as connected
// ("unhealthy cluster"): that is retried for 30 s.
func (m *Members) Remove(ctx context.Context, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := m.remove(ctx, name)
		var none *noMemberError
		if err == nil || errors.As(err, &none) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

type noMemberError struct{ name, members string }

func (e *noMemberError) Error() string {
	return fmt.Sprintf("no etcd member is called %q; members: %s (see skiff etcd-member list)", e.name, e.members)
}

func (m *Members) remove(ctx context.Context, name string) error {
	list, err := m.client.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("list etcd members: %w", err)
	}
	var names []string
	for _, pm := range list.Members {
		if pm.Name == name {
			if _, err := m.client.MemberRemove(ctx, pm.ID); err != nil {
				return fmt.Errorf("remove etcd member %q: %w", name, err)
			}
			return nil
		}
		names = append(names, pm.Name)
	}
	return &noMemberError{name: name, members: strings.Join(names, ", ")}
}

// EnsurePeerURL points the member called name at peerURL: a server that
// ran alone (peer URL on loopback) and now starts with --cluster-init, or
// one restored from a snapshot, must be reachable before others join.
func (m *Members) EnsurePeerURL(ctx context.Context, name, peerURL string) error {
	list, err := m.client.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("list etcd members: %w", err)
	}
	self := list.Header.MemberId
	for _, pm := range list.Members {
		if pm.ID != self || slices.Equal(pm.PeerURLs, []string{peerURL}) {
			continue
		}
		if _, err := m.client.MemberUpdate(ctx, pm.ID, []string{peerURL}); err != nil {
			return fmt.Errorf("set this member's peer URL to %s: %w", peerURL, err)
		}
	}
	return nil
}
