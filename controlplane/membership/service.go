// Package membership lets servers join a cluster: every server of a
// multi-server cluster runs a small HTTPS service (the join port, 9345 as
// in k3s) through which a new server, holding only the join token, fetches
// the cluster's shared keys and settings and is added to the embedded etcd
// as a learner, then promoted once it has caught up.
package membership

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/skiffnet/skiff/controlplane/etcd"
	"github.com/skiffnet/skiff/controlplane/pki"
)

// DefaultPort is the join service's port on every server.
const DefaultPort = 9345

// Settings are the cluster-wide flags every server must share; a joining
// server takes them from the cluster instead of its own command line.
type Settings struct {
	ClusterCIDR      string `json:"clusterCIDR"`
	NodeCIDRMaskSize int    `json:"nodeCIDRMaskSize"`
	ServiceCIDR      string `json:"serviceCIDR"`
	NodePortRange    string `json:"nodePortRange"`
	ClusterDNS       string `json:"clusterDNS"`
	ClusterDomain    string `json:"clusterDomain"`
	GatewayCIDR      string `json:"gatewayCIDR,omitempty"`
	LoadBalancerPool string `json:"loadBalancerPool,omitempty"`
}

// SettingsFile is where a server of a multi-server cluster keeps the
// cluster's settings; its presence also says the server is one of several.
func SettingsFile(dataDir string) string { return filepath.Join(dataDir, "cluster.json") }

// LoadSettings reads SettingsFile; ok is false when there is none.
func LoadSettings(dataDir string) (s Settings, ok bool, err error) {
	b, err := os.ReadFile(SettingsFile(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return s, false, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, false, fmt.Errorf("%s: %w; restore it from another server's data dir", SettingsFile(dataDir), err)
	}
	return s, true, nil
}

// SaveSettings writes SettingsFile.
func SaveSettings(dataDir string, s Settings) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return pki.WriteFile(SettingsFile(dataDir), append(b, '\n'), 0o600)
}

// bootstrap is what a joining server receives.
type bootstrap struct {
	Settings Settings          `json:"settings"`
	Token    string            `json:"token"`
	Files    map[string][]byte `json:"files"`
}

type memberRequest struct {
	Name    string `json:"name"`
	PeerURL string `json:"peerURL"`
}

type memberResponse struct {
	ID      uint64 `json:"id"`
	Initial string `json:"initialCluster"`
}

// Service answers joining servers.
type Service struct {
	Token    pki.JoinToken
	TLSDir   string // holds pki.SharedFiles
	Settings Settings
	Members  *etcd.Members
	Logger   *slog.Logger
}

// Handler serves the join API.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/skiff/bootstrap", s.authorized(s.bootstrap))
	mux.HandleFunc("POST /v1/skiff/members", s.authorized(s.addMember))
	mux.HandleFunc("POST /v1/skiff/members/{id}/promote", s.authorized(s.promote))
	return mux
}

// Serve runs the service on addr with the API server's certificate (its
// file carries the CA, which a joining server checks against the token).
func (s *Service) Serve(ctx context.Context, addr, certFile, keyFile string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("join service on %s: %w (is another skiff server running? pick another port with --join-port)", addr, err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ServeTLS(l, certFile, keyFile); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Service) authorized(h http.HandlerFunc) http.HandlerFunc {
	want := []byte("Bearer " + s.Token.Bootstrap())
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			s.Logger.Warn("join refused: wrong token", "remote", r.RemoteAddr, "path", r.URL.Path)
			http.Error(w, "the join token is not this cluster's: copy DATA/token from one of its servers", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

func (s *Service) bootstrap(w http.ResponseWriter, _ *http.Request) {
	b := bootstrap{Settings: s.Settings, Token: s.Token.String(), Files: map[string][]byte{}}
	for _, name := range pki.SharedFiles {
		data, err := os.ReadFile(filepath.Join(s.TLSDir, name))
		if err != nil {
			http.Error(w, "read "+name+": "+err.Error(), http.StatusInternalServerError)
			return
		}
		b.Files[name] = data
	}
	writeJSON(w, b)
}

func (s *Service) addMember(w http.ResponseWriter, r *http.Request) {
	var req memberRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil || req.Name == "" || !strings.HasPrefix(req.PeerURL, "https://") {
		http.Error(w, "want JSON {name, peerURL: https://...}", http.StatusBadRequest)
		return
	}
	id, initial, err := s.Members.AddLearner(r.Context(), req.Name, req.PeerURL)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	s.Logger.Info("added etcd learner", "name", req.Name, "peer", req.PeerURL, "id", fmt.Sprintf("%x", id))
	writeJSON(w, memberResponse{ID: id, Initial: initial})
}

func (s *Service) promote(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 16, 64)
	if err != nil {
		http.Error(w, "member id: want hex", http.StatusBadRequest)
		return
	}
	switch err := s.Members.Promote(r.Context(), id); {
	case errors.Is(err, etcd.ErrNotInSync):
		http.Error(w, err.Error(), http.StatusConflict)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		s.Logger.Info("promoted etcd member", "id", fmt.Sprintf("%x", id))
		w.WriteHeader(http.StatusNoContent)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Default().Debug("write join response", "err", err)
	}
}
