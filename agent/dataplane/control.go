package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skiffnet/skiff/agent/handoff"
)

// Status is what a data plane reports on its control socket.
type Status struct {
	PID     int       `json:"pid"`
	Version string    `json:"version"`
	Node    string    `json:"node"`
	Since   time.Time `json:"since"`
	DNS     string    `json:"dns"`
	HTTP    string    `json:"http,omitempty"`
	HTTPS   string    `json:"https,omitempty"`
	// Predecessor is the data plane this one took over from, if any.
	Predecessor *handoff.Peer `json:"predecessor,omitempty"`
}

// control is the data plane's control socket: GET /status, GET /metrics
// and POST /handoff, on a unix socket only root can reach.
type control struct {
	srv       *http.Server
	ln        *net.UnixListener
	tmp, path string
}

// listenControl binds the control socket at a temporary path; publish
// renames it over the real one, so a client always finds exactly one data
// plane: the predecessor until then, this process after.
func listenControl(path string, st Status, reg *prometheus.Registry, offer *handoff.Offer, log *slog.Logger) (*control, error) {
	tmp := fmt.Sprintf("%s.%d", path, os.Getpid())
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", tmp, err)
	}
	// The path will be a successor's one day: closing must not remove it.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket %s: %w", tmp, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle(handoff.Path, offer)
	c := &control{ln: ln, tmp: tmp, path: path, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := c.srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Warn("control socket stopped", "err", err)
		}
	}()
	return c, nil
}

// publish puts the control socket at its real path.
func (c *control) publish() error {
	if err := os.Rename(c.tmp, c.path); err != nil {
		return fmt.Errorf("control socket %s: %w", c.path, err)
	}
	c.tmp = ""
	return nil
}

// Close stops the control socket; its real path stays (a successor's by
// then), a never-published one goes.
func (c *control) Close() {
	c.srv.Close()
	if c.tmp != "" {
		os.Remove(c.tmp)
	}
}

// client is an HTTP client for a data plane's control socket.
func client(socket string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		},
	}
}

// ReadStatus asks the data plane on socket how it is.
func ReadStatus(ctx context.Context, socket string) (Status, error) {
	var st Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dataplane/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := client(socket, 5*time.Second).Do(req)
	if err != nil {
		return st, fmt.Errorf("data plane status at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("data plane status at %s: %s", socket, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("data plane status at %s: %w", socket, err)
	}
	return st, nil
}
