package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
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
	// an upgraded agent starts an upgraded data plane).
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
// if any) and starts another should it die while ctx lasts. It never stops
// one: when ctx ends, the data plane keeps serving, for the next agent to
// replace.
func (p *Process) Supervise(ctx context.Context) error {
	p.Config.defaults()
	if p.Binary == "" {
		p.Binary = "/proc/self/exe"
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
		cmd, err := p.start()
		if err != nil {
			return err
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		go p.announce(ctx, cmd.Process.Pid, exited)
		select {
		case <-ctx.Done():
			return nil
		case err := <-exited:
			if ctx.Err() != nil {
				return nil
			}
			p.Logger.Warn("the data plane exited; starting another", "pid", cmd.Process.Pid, "err", err, "after", backoff, "log", p.LogPath)
			p.Progress("data plane (pid %d) exited: %v; see %s; starting another in %s", cmd.Process.Pid, err, p.LogPath, backoff)
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (p *Process) start() (*exec.Cmd, error) {
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data plane log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(p.Binary, p.Config.Args()...)
	// ps shows "skiff dataplane ...", not /proc/self/exe.
	cmd.Args[0] = os.Args[0]
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
