package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Process is how the agent starts its node's data plane.
type Process struct {
	Config Config
	// Binary is the skiff binary to run (default: this process's own, so
	// an upgraded agent starts an upgraded data plane; after an upgrade in
	// place, the file now at its path).
	Binary string
	// LogPath receives the data plane's output.
	LogPath string
	// Progress prints a line for the person watching the agent.
	Progress func(format string, args ...any)
	Logger   *slog.Logger
}

// Args are the `skiff dataplane` command line for c.
func (c Config) Args() []string {
	args := []string{"dataplane",
		"--node-name", c.NodeName, "--node-ip", c.NodeIP, "--kubeconfig", c.Kubeconfig,
		"--cluster-domain", c.ClusterDomain,
		"--ingress-http", c.IngressHTTP, "--ingress-https", c.IngressHTTPS,
	}
	if c.IngressAccessLog {
		args = append(args, "--ingress-access-log")
	}
	if c.Socket != "" {
		args = append(args, "--socket", c.Socket)
	}
	return args
}

// Supervise starts a data plane (which takes over from the running one,
// if any) and starts another, with back-off, should it die or fail to
// start while ctx lasts. It never stops one: when ctx ends, the data plane
// keeps serving, for the next agent to replace.
func (p *Process) Supervise(ctx context.Context) {
	p.Config.defaults()
	if p.Binary == "" {
		// This binary, by its path, so ps and ss name it skiff.
		p.Binary = "/proc/self/exe"
		if exe, err := os.Executable(); err == nil {
			p.Binary = exe
		}
	}
	if p.LogPath == "" {
		p.LogPath = os.DevNull
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	if p.Progress == nil {
		p.Progress = func(string, ...any) {}
	}
	backoff := time.Second
	for {
		start := time.Now()
		if cmd, err := p.start(); err != nil {
			p.Logger.Error("cannot start the data plane", "err", err, "retry in", backoff)
			p.Progress("cannot start the data plane: %v; trying again in %s", err, backoff)
		} else {
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			go p.announce(ctx, cmd.Process.Pid, exited)
			select {
			case <-ctx.Done():
				return
			case err := <-exited:
				if ctx.Err() != nil {
					return
				}
				p.Logger.Warn("the data plane exited; starting another", "pid", cmd.Process.Pid, "err", err, "after", backoff, "log", p.LogPath)
				p.Progress("data plane (pid %d) exited: %v; see %s; starting another in %s", cmd.Process.Pid, err, p.LogPath, backoff)
			}
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (p *Process) start() (*exec.Cmd, error) {
	if err := os.MkdirAll(filepath.Dir(p.LogPath), 0o700); err != nil {
		return nil, fmt.Errorf("data plane log: %w", err)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data plane log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(p.Binary, p.Config.Args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A session of its own: neither a terminal's Ctrl-C nor a signal to
	// the agent's process group reaches it. It stays in the agent's cgroup
	// (the node's), where `skiff uninstall` finds it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the data plane (%s dataplane): %w", p.Binary, err)
	}
	return cmd, nil
}

// announce prints one line once the data plane serves.
func (p *Process) announce(ctx context.Context, pid int, exited <-chan error) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := ReadStatus(ctx, p.Config.Socket)
		if err == nil && st.PID == pid {
			from := ""
			if st.Predecessor != nil {
				from = fmt.Sprintf(", took over from pid %d (%s) without closing a socket", st.Predecessor.PID, st.Predecessor.Version)
			}
			p.Progress("data plane (pid %d) serves cluster DNS on %s and ingress on %s/%s%s",
				pid, st.DNS, st.HTTP, st.HTTPS, from)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-exited:
			return
		case <-tick.C:
		}
	}
}

// Gatherer reads the data plane's metrics over its control socket, so the
// agent's metrics endpoint serves them beside its own. While no data plane
// answers it gathers nothing rather than failing the whole scrape.
func Gatherer(socket string, log *slog.Logger) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://dataplane/metrics", nil)
		req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
		resp, err := client(socket, 5*time.Second).Do(req)
		if err != nil {
			log.Debug("no data plane metrics", "err", err)
			return nil, nil
		}
		defer resp.Body.Close()
		dec := expfmt.NewDecoder(resp.Body, expfmt.ResponseFormat(resp.Header))
		var out []*dto.MetricFamily
		for {
			mf := &dto.MetricFamily{}
			if err := dec.Decode(mf); err != nil {
				break
			}
			out = append(out, mf)
		}
		return out, nil
	})
}
