package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skiffnet/skiff/bench/pinned"
	"github.com/skiffnet/skiff/bench/skiffserver"
)

// options are the run command's flags.
type options struct {
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	conns       []int
	protos      []string
	latencyFor  time.Duration
	latencyRate float64 // share of nginx's maximum for the fixed-rate runs
	idleConns   int
	proxyCPU    int
	loadCPU     int
	nice        int
	disturbedAt float64 // share of the proxy core others may take before a round counts as disturbed
	netHTTP     bool    // also measure Skiff with the lean path off
	profile     string  // CPU profile of Skiff's proxy over the whole run
	peers       []string
}

func parseRun(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.IntVar(&o.rounds, "rounds", 5, "rounds; each round measures every proxy once, in rotating order")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "wrk duration of each measured run")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "wrk warm-up per proxy before the rounds of each setting")
	conns := fs.String("conns", "64,256,1000", "wrk connection counts")
	protos := fs.String("protos", "http,https", "protocols: http, https (TLS 1.3, ECDSA P-256)")
	fs.DurationVar(&o.latencyFor, "latency-for", 10*time.Second, "duration of each fixed-rate latency run (0: skip)")
	fs.Float64Var(&o.latencyRate, "latency-rate", 0.5, "fixed rate as a share of nginx's median maximum at the first -conns")
	fs.IntVar(&o.idleConns, "idle", 10000, "idle keep-alive connections for the memory measurement (0: skip)")
	fs.IntVar(&o.proxyCPU, "proxy-cpu", 0, "the CPU every proxy is pinned to")
	fs.IntVar(&o.loadCPU, "load-cpu", 1, "the CPU of wrk, hey and the backends")
	fs.IntVar(&o.nice, "nice", -19, "niceness (and autogroup niceness) of proxies, backends and load generators")
	fs.Float64Var(&o.disturbedAt, "disturbed-at", 0.10, "a run in which other tasks took more than this share of the proxy core is flagged")
	fs.BoolVar(&o.netHTTP, "with-nethttp", false, "also measure Skiff with its lean HTTP/1.1 path off (net/http only)")
	fs.StringVar(&o.profile, "skiff-cpuprofile", "", "write a CPU profile of Skiff's proxy over the whole run to this file (and FILE.nethttp)")
	peers := fs.String("peers", "nginx,haproxy", "peer proxies")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, c := range strings.Split(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n <= 0 {
			return o, fmt.Errorf("bad -conns %q", *conns)
		}
		o.conns = append(o.conns, n)
	}
	o.protos = strings.Split(*protos, ",")
	o.peers = strings.Split(*peers, ",")
	if o.rounds < 1 {
		return o, errors.New("-rounds must be at least 1")
	}
	return o, nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// run is the whole benchmark: it starts backends and proxies, measures,
// prints the report, and stops everything it started by PID.
func run(ctx context.Context, args []string) error {
	o, err := parseRun(args)
	if err != nil {
		return err
	}
	raiseFileLimit()
	dir, err := os.MkdirTemp("", "skiff-bench-ingress-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := cert([]string{"-dir", dir}); err != nil {
		return err
	}
	ports, err := skiffserver.FreePorts(2 + 2*(2+len(o.peers)))
	if err != nil {
		return err
	}
	var procs []*pinned.Proc
	defer func() {
		for _, p := range procs {
			p.Close()
		}
	}()
	be := []string{"127.0.0.1:" + strconv.Itoa(ports[0]), "127.0.0.1:" + strconv.Itoa(ports[1])}
	for i, addr := range be {
		p, err := pinned.Start(fmt.Sprintf("backend%d", i+1), dir, o.loadCPU, o.nice, nil, self, "backend", "-addr", addr)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	for _, addr := range be {
		if err := waitPort(ctx, addr); err != nil {
			return err
		}
	}

	if o.profile != "" {
		if o.profile, err = filepath.Abs(o.profile); err != nil {
			return err
		}
	}
	cs := []contestant{skiffContestant(self, dir, ports[2], ports[3], strings.Join(be, ","), false, o.profile)}
	next := 4
	if o.netHTTP {
		cs = append(cs, skiffContestant(self, dir, ports[next], ports[next+1], strings.Join(be, ","), true, o.profile))
		next += 2
	}
	for _, name := range o.peers {
		var c contestant
		switch name {
		case "nginx":
			c, err = nginxContestant(dir, ports[next], ports[next+1], be)
		case "haproxy":
			c, err = haproxyContestant(dir, ports[next], ports[next+1], be)
		default:
			err = fmt.Errorf("unknown peer %q", name)
		}
		if err != nil {
			return err
		}
		next += 2
		cs = append(cs, c)
	}
	var running []*started
	for _, c := range cs {
		p, err := pinned.Start(c.name, dir, o.proxyCPU, o.nice, c.env, c.argv...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		running = append(running, &started{contestant: c, proc: p})
	}
	for _, p := range running {
		if err := p.check(ctx); err != nil {
			return err
		}
	}
	rep := &report{o: o, proxies: running, load: loadAvg(), versions: versions()}
	if err := measure(ctx, o, running, rep); err != nil {
		return err
	}
	rep.print(os.Stdout)
	return nil
}

// started is a contestant that runs.
type started struct {
	contestant
	proc *pinned.Proc
}

func (p *started) url(proto string) string {
	port := p.http
	if proto == "https" {
		port = p.tls
	}
	return fmt.Sprintf("%s://127.0.0.1:%d/", proto, port)
}

// check waits until the proxy answers a request for bench.local with a
// backend's body over HTTP and HTTPS (TLS 1.3), so that a broken
// configuration fails here and not as a fast stream of errors.
func (p *started) check(ctx context.Context) error {
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "bench.local", MinVersion: tls.VersionTLS13},
	}}
	deadline := time.Now().Add(30 * time.Second)
	for _, proto := range []string{"http", "https"} {
		for {
			if err := p.proc.Alive(); err != nil {
				return err
			}
			err := get(cl, p.url(proto))
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s does not answer %s: %w\n%s", p.name, p.url(proto), err, p.proc.Tail())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func get(cl *http.Client, url string) error {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = "bench.local"
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"service":"bench"`) {
		return fmt.Errorf("%s: %q", resp.Status, b)
	}
	return nil
}

func waitPort(ctx context.Context, addr string) error {
	for range 200 {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

// raiseFileLimit lifts the soft descriptor limit to the hard one, for
// this program's idle connections and, inherited, for the proxies and wrk.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func versions() string {
	var out []string
	for _, argv := range [][]string{{"nginx", "-v"}, {"haproxy", "-v"}, {"wrk", "-v"}} {
		b, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		out = append(out, line)
	}
	return strings.Join(out, "; ")
}
