package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skiffnet/skiff/bench/pinned"
)

// result is one measured run of one proxy.
type result struct {
	rps    float64
	p99    time.Duration
	errors string  // non-2xx responses and socket errors, as the tool said
	cpu    float64 // the proxy's user+system time over wall time: cores it got
	others float64 // share of the proxy's core that other tasks took
}

func (r *result) disturbed(o options) bool { return r.others > o.disturbedAt || r.errors != "" }

// setting is one row group of the report: a protocol at a connection count.
type setting struct {
	proto string
	conns int
}

// measure runs the throughput rounds, the fixed-rate latency rounds and
// the idle-connection measurement.
func measure(ctx context.Context, o options, ps []*started, rep *report) error {
	rep.throughput = map[setting][][]*result{}
	rep.latency = map[string][][]*result{}
	for _, proto := range o.protos {
		for _, conns := range o.conns {
			s := setting{proto, conns}
			for _, p := range ps {
				step("warming up %s, %s, %d connections", p.name, proto, conns)
				if _, err := wrk(ctx, o, p, proto, conns, o.warmup); err != nil {
					return err
				}
			}
			runs := make([][]*result, len(ps))
			for r := range o.rounds {
				for k := range ps {
					i := (k + r) % len(ps) // a different proxy goes first each round
					step("round %d/%d: %s, %s, %d connections, %s", r+1, o.rounds, ps[i].name, proto, conns, o.duration)
					res, err := wrk(ctx, o, ps[i], proto, conns, o.duration)
					if err != nil {
						return err
					}
					runs[i] = append(runs[i], res)
				}
			}
			rep.throughput[s] = runs
		}
		if o.latencyFor > 0 {
			if err := measureLatency(ctx, o, ps, proto, rep); err != nil {
				return err
			}
		}
	}
	if o.idleConns > 0 {
		for _, p := range ps {
			step("%d idle keep-alive connections to %s", o.idleConns, p.name)
			m, err := idleCost(ctx, p, o.idleConns)
			if err != nil {
				// a proxy that cannot hold them (its descriptor limit)
				// is reported as such; the other results stand
				step("%v", err)
				m = idleMemory{perConn: math.NaN(), rss: math.NaN()}
			}
			rep.idle = append(rep.idle, m)
		}
	}
	return nil
}

// measureLatency runs hey at a fixed rate, o.latencyRate of nginx's median
// maximum at the first connection count (of the first proxy when nginx is
// not measured), so that p99 compares service times, not queue lengths.
func measureLatency(ctx context.Context, o options, ps []*started, proto string, rep *report) error {
	ref := 0
	for i, p := range ps {
		if p.name == "nginx" {
			ref = i
		}
	}
	max := median(rep.throughput[setting{proto, o.conns[0]}][ref]).rps
	rate := o.latencyRate * max
	rep.rates = append(rep.rates, rate)
	runs := make([][]*result, len(ps))
	for r := range o.rounds {
		for k := range ps {
			i := (k + r) % len(ps)
			step("latency round %d/%d: %s, %s at %.0f requests/s", r+1, o.rounds, ps[i].name, proto, rate)
			res, err := hey(ctx, o, ps[i], proto, o.conns[0], rate)
			if err != nil {
				return err
			}
			runs[i] = append(runs[i], res)
		}
	}
	rep.latency[proto] = runs
	return nil
}

// accounted runs cmd while reading what the proxy and its core did.
func accounted(o options, p *started, cmd *exec.Cmd) (string, *result, error) {
	cpu0, err := p.proc.CPUTime()
	if err != nil {
		return "", nil, err
	}
	_, tasks0, total0, err := pinned.CoreTicks(o.proxyCPU)
	if err != nil {
		return "", nil, err
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return "", nil, fmt.Errorf("%s against %s: %w\n%s", cmd.Args[0], p.name, err, out)
	}
	if err := p.proc.Alive(); err != nil {
		return "", nil, err
	}
	cpu1, err := p.proc.CPUTime()
	if err != nil {
		return "", nil, err
	}
	_, tasks1, total1, err := pinned.CoreTicks(o.proxyCPU)
	if err != nil {
		return "", nil, err
	}
	res := &result{cpu: (cpu1 - cpu0).Seconds() / wall.Seconds()}
	if total1 > total0 {
		// ticks are 10 ms: what processes ran on the core, less the proxy
		ran := time.Duration(tasks1-tasks0) * 10 * time.Millisecond
		res.others = max(0, (ran-(cpu1-cpu0)).Seconds()/wall.Seconds())
	}
	return string(out), res, nil
}

var (
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99    = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkErrors = regexp.MustCompile(`(?m)^\s*(Non-2xx or 3xx responses: \d+|Socket errors: .*)$`)
)

// wrk runs wrk with keep-alive against p for d.
func wrk(ctx context.Context, o options, p *started, proto string, conns int, d time.Duration) (*result, error) {
	argv := pinned.Argv(o.loadCPU, o.nice, "wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+d.String(),
		"--latency", "-H", "Host: bench.local", p.url(proto))
	out, res, err := accounted(o, p, exec.CommandContext(ctx, "nice", argv...))
	if err != nil {
		return nil, err
	}
	m := wrkRPS.FindStringSubmatch(out)
	l := wrkP99.FindStringSubmatch(out)
	if m == nil || l == nil {
		return nil, fmt.Errorf("wrk against %s: no Requests/sec or 99%% in:\n%s", p.name, out)
	}
	res.rps, _ = strconv.ParseFloat(m[1], 64)
	res.p99 = duration(l[1], l[2])
	for _, e := range wrkErrors.FindAllStringSubmatch(out, -1) {
		res.errors = strings.TrimSpace(res.errors + " " + e[1])
	}
	return res, nil
}

func duration(v, unit string) time.Duration {
	f, _ := strconv.ParseFloat(v, 64)
	switch unit {
	case "us":
		return time.Duration(f * float64(time.Microsecond))
	case "ms":
		return time.Duration(f * float64(time.Millisecond))
	}
	return time.Duration(f * float64(time.Second))
}

var (
	heyRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	heyP99    = regexp.MustCompile(`99%+ in ([0-9.]+) secs`)
	heySlow   = regexp.MustCompile(`Slowest:\s+([0-9.]+) secs`)
	heyStatus = regexp.MustCompile(`\[(\d+)\]\s+(\d+) responses`)
)

// hey sends rate requests/s over conns keep-alive connections (hey -q is
// per connection) for o.latencyFor.
func hey(ctx context.Context, o options, p *started, proto string, conns int, rate float64) (*result, error) {
	argv := pinned.Argv(o.loadCPU, o.nice, "hey", "-z", o.latencyFor.String(), "-c", strconv.Itoa(conns),
		"-q", strconv.FormatFloat(rate/float64(conns), 'f', 2, 64), "-host", "bench.local", p.url(proto))
	out, res, err := accounted(o, p, exec.CommandContext(ctx, "nice", argv...))
	if err != nil {
		return nil, err
	}
	m := heyRPS.FindStringSubmatch(out)
	l := heyP99.FindStringSubmatch(out)
	if l == nil {
		// hey prints no 99% line for fewer than 100 responses; then
		// the slowest one is the 99th percentile
		l = heySlow.FindStringSubmatch(out)
	}
	if m == nil || l == nil {
		return nil, fmt.Errorf("hey against %s: no Requests/sec or 99%% in:\n%s", p.name, out)
	}
	res.rps, _ = strconv.ParseFloat(m[1], 64)
	res.p99 = duration(l[1], "s")
	for _, s := range heyStatus.FindAllStringSubmatch(out, -1) {
		if s[1] != "200" {
			res.errors = strings.TrimSpace(res.errors + fmt.Sprintf(" %s responses: %s", s[1], s[2]))
		}
	}
	if strings.Contains(out, "Error distribution:") {
		res.errors = strings.TrimSpace(res.errors + " transport errors (see hey's Error distribution)")
	}
	return res, nil
}

// idleMemory is what a proxy's idle connections cost.
type idleMemory struct {
	perConn float64 // growth of the resident set per connection, bytes
	rss     float64 // the resident set with the connections open, bytes
}

// idleCost opens n keep-alive connections to p, sends one request on each
// and leaves them idle, and measures p's resident memory. Growth per
// connection undercounts a proxy that allocates its connection table up
// front (nginx, for worker_connections), so the total is reported too.
func idleCost(ctx context.Context, p *started, n int) (idleMemory, error) {
	before, err := p.proc.RSS()
	if err != nil {
		return idleMemory{}, err
	}
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	addr := strings.TrimSuffix(strings.TrimPrefix(p.url("http"), "http://"), "/")
	req := []byte("GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n")
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(req); err != nil {
				errs <- err
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Close {
				errs <- fmt.Errorf("%s: %s, close=%v", p.name, resp.Status, resp.Close)
			}
		}()
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return idleMemory{}, fmt.Errorf("idle connections to %s: %w", p.name, err)
	}
	time.Sleep(time.Second) // let the proxy settle (Go's scavenger, nginx's buffers)
	after, err := p.proc.RSS()
	if err != nil {
		return idleMemory{}, err
	}
	if err := p.proc.Alive(); err != nil {
		return idleMemory{}, err
	}
	return idleMemory{perConn: (float64(after) - float64(before)) / float64(n), rss: float64(after)}, nil
}
