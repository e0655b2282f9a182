package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skiffnet/skiff/bench/pinned"
)

// perf is one dnsperf run's summary.
type perf struct {
	sent, completed, lost int
	qps                   float64
	avgLatency            time.Duration
	rcodes                string
	latencies             []time.Duration // each query's, with -v only
	clientCPU             time.Duration   // dnsperf's own user+system time
	serverCPU             time.Duration   // the server's over the run
	serverCore            float64         // fraction of the server's core busy (any task, irq, softirq)
	wall                  time.Duration
}

var (
	reSent      = regexp.MustCompile(`Queries sent:\s+(\d+)`)
	reCompleted = regexp.MustCompile(`Queries completed:\s+(\d+)`)
	reLost      = regexp.MustCompile(`Queries lost:\s+(\d+)`)
	reQPS       = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	reAvg       = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)
	reRcodes    = regexp.MustCompile(`Response codes:\s+(.*)`)
	// -v prints one line per answered query: "> RCODE NAME TYPE SECONDS".
	reVerbose = regexp.MustCompile(`^> \S+ \S+ \S+ ([0-9.]+)$`)
)

// dnsperf runs dnsperf on cpu against s with extra arguments and parses
// its summary (and, with -v, every query's latency).
// With fifo, dnsperf runs in the SCHED_FIFO class (see latencyRun).
func dnsperf(ctx context.Context, o options, s *dnsServer, qfile string, d time.Duration, fifo bool, extra ...string) (*perf, error) {
	host, port, _ := strings.Cut(s.addr, ":")
	args := append(pinned.Argv(o.clientCPU, o.nice, "dnsperf",
		"-s", host, "-p", port, "-d", qfile, "-l", strconv.Itoa(int(d.Seconds())),
		"-T", "1", "-c", "1", "-t", "2"), extra...)
	cmd := exec.CommandContext(ctx, "nice", args...)
	if fifo {
		cmd = exec.CommandContext(ctx, "chrt", append([]string{"-f", "1", "nice"}, args...)...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	before, err := s.CPUTime()
	if err != nil {
		return nil, err
	}
	busy0, _, total0, err := pinned.CoreTicks(o.serverCPU)
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("dnsperf: %w", err)
	}
	if err := pinned.Prioritize(cmd.Process.Pid, o.nice); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("dnsperf against %s: %w\n%s%s", s.Name, err, errb.String(), tail(out.String()))
	}
	p := &perf{wall: time.Since(start), clientCPU: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	after, err := s.CPUTime()
	if err != nil {
		return nil, err
	}
	p.serverCPU = after - before
	busy1, _, total1, err := pinned.CoreTicks(o.serverCPU)
	if err != nil {
		return nil, err
	}
	if total1 > total0 {
		p.serverCore = float64(busy1-busy0) / float64(total1-total0)
	}
	text := out.String()
	ints := []struct {
		re *regexp.Regexp
		v  *int
	}{{reSent, &p.sent}, {reCompleted, &p.completed}, {reLost, &p.lost}}
	for _, f := range ints {
		m := f.re.FindStringSubmatch(text)
		if m == nil {
			return nil, fmt.Errorf("dnsperf against %s: no %q in its output:\n%s", s.Name, f.re, tail(text))
		}
		*f.v, _ = strconv.Atoi(m[1])
	}
	m := reQPS.FindStringSubmatch(text)
	a := reAvg.FindStringSubmatch(text)
	if m == nil || a == nil {
		return nil, fmt.Errorf("dnsperf against %s: no qps or latency in its output:\n%s", s.Name, tail(text))
	}
	p.qps, _ = strconv.ParseFloat(m[1], 64)
	avg, _ := strconv.ParseFloat(a[1], 64)
	p.avgLatency = seconds(avg)
	if r := reRcodes.FindStringSubmatch(text); r != nil {
		p.rcodes = r[1]
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if v := reVerbose.FindStringSubmatch(sc.Text()); v != nil {
			f, _ := strconv.ParseFloat(v[1], 64)
			p.latencies = append(p.latencies, seconds(f))
		}
	}
	slices.Sort(p.latencies)
	return p, nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// percentile of sorted latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p/100))]
}

// measure runs, for every server: a warm-up, then o.rounds throughput runs
// interleaved across servers (so a noisy neighbour on this machine hits
// all of them alike), then o.rounds latency runs at o.latencyQPS with every
// query's latency recorded, interleaved the same way.
func measure(ctx context.Context, o options, qfile string, servers []*dnsServer, rep *report) error {
	for _, s := range servers {
		step("warming up %s", s.Name)
		if _, err := dnsperf(ctx, o, s, qfile, 3*time.Second, false, "-q", strconv.Itoa(o.outstanding)); err != nil {
			return err
		}
	}
	rep.throughput = make([][]*perf, len(servers))
	for r := range o.rounds {
		for i, s := range servers {
			step("throughput round %d/%d: %s for %s", r+1, o.rounds, s.Name, o.duration)
			p, err := dnsperf(ctx, o, s, qfile, o.duration, false, "-q", strconv.Itoa(o.outstanding))
			if err != nil {
				return err
			}
			rep.throughput[i] = append(rep.throughput[i], p)
		}
	}
	rep.latency = make([][]*perf, len(servers))
	for r := range o.rounds {
		for i, s := range servers {
			step("latency round %d/%d: %s at %d queries/s for %s", r+1, o.rounds, s.Name, o.latencyQPS, o.latencyFor)
			p, err := latencyRun(ctx, o, s, qfile)
			if err != nil {
				return err
			}
			if len(p.latencies) == 0 {
				return fmt.Errorf("dnsperf -v against %s printed no per-query latencies", s.Name)
			}
			rep.latency[i] = append(rep.latency[i], p)
		}
	}
	for _, s := range servers {
		if rss, err := s.RSS(); err == nil {
			rep.rss = append(rep.rss, rss)
		}
	}
	return nil
}

// latencyRun measures every query's round trip at o.latencyQPS. With
// o.fifo the server (all its threads) and dnsperf run in the SCHED_FIFO
// class for the run, so that on a shared machine a wakeup is not queued
// behind other work on the same core: the tail then shows the server, not
// its neighbours. Neither runs flat out at this rate, so the rest of the
// machine keeps most of both cores; the server goes back to SCHED_OTHER
// right after.
func latencyRun(ctx context.Context, o options, s *dnsServer, qfile string) (*perf, error) {
	if o.fifo {
		if err := s.SchedFIFO(true); err != nil {
			return nil, err
		}
		defer s.SchedFIFO(false)
	}
	return dnsperf(ctx, o, s, qfile, o.latencyFor, o.fifo, "-Q", strconv.Itoa(o.latencyQPS), "-q", "1000", "-v")
}
