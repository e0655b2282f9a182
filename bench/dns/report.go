package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

type report struct {
	o          options
	mix        []share
	distinct   int
	servers    []*dnsServer
	throughput [][]*perf // [server][round]
	latency    [][]*perf // [server][round]
	rss        []uint64  // [server], after the runs
	load       string    // /proc/loadavg before the runs: is the machine shared?
	coredns    string    // its -version
}

// median is the run with the median qps.
func median(runs []*perf) *perf {
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b *perf) int { return cmp.Compare(a.qps, b.qps) })
	return s[len(s)/2]
}

// medianP99 is server i's latency run with the median p99.
func (r *report) medianP99(i int) *perf {
	s := slices.Clone(r.latency[i])
	slices.SortFunc(s, func(a, b *perf) int {
		return cmp.Compare(percentile(a.latencies, 99), percentile(b.latencies, 99))
	})
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func pct(part, whole time.Duration) string {
	return fmt.Sprintf("%.0f%%", 100*float64(part)/float64(whole))
}

func (r *report) print(w io.Writer) {
	o := r.o
	headless := o.services / 5
	fmt.Fprintf(w, "\nCluster DNS: Skiff vs %s (kubernetes plugin), %d Services (%d headless), %d endpoints each\n",
		r.coredns, o.services, headless, endpointsPerService)
	fmt.Fprintf(w, "query file: %d lines, %d distinct questions, answered alike by every server:\n", o.queries, r.distinct)
	for _, s := range r.mix {
		fmt.Fprintf(w, "  %3d%%  %s\n", s.percent, s.what)
	}
	fmt.Fprintf(w, "each server alone on CPU %d (taskset), dnsperf on CPU %d, all at nice %d; load average at start %s\n",
		o.serverCPU, o.clientCPU, o.nice, r.load)
	fmt.Fprintln(w, "server CPU: the server process's user+system time; core busy: all of its core's non-idle time (softirq too)")
	fmt.Fprintln(w)

	fmt.Fprintf(w, "throughput: dnsperf -q %d, %d × %s per server, interleaved; median run\n", o.outstanding, o.rounds, o.duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "server\tqueries/s\truns\tavg latency\tlost\tserver CPU\tcore busy\tdnsperf CPU\tRSS")
	for i, s := range r.servers {
		m := median(r.throughput[i])
		var runs []string
		for _, p := range r.throughput[i] {
			runs = append(runs, fmt.Sprintf("%.0f", p.qps))
		}
		rss := ""
		if i < len(r.rss) {
			rss = fmt.Sprintf("%d MiB", r.rss[i]>>20)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%d\t%s\t%.0f%%\t%s\t%s\n", s.Name, m.qps, strings.Join(runs, " "),
			ms(m.avgLatency), m.lost, pct(m.serverCPU, m.wall), 100*m.serverCore, pct(m.clientCPU, m.wall), rss)
	}
	tw.Flush()

	fifo := ""
	if o.fifo {
		fifo = ", server and dnsperf SCHED_FIFO"
	}
	fmt.Fprintf(w, "\nlatency: dnsperf -Q %d, %d × %s per server, interleaved%s; every query's round trip (dnsperf -v), run with the median p99\n",
		o.latencyQPS, o.rounds, o.latencyFor, fifo)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "server\tqueries\tlost\tavg\tp50\tp99\tp99.9\tmax\tserver CPU\tdnsperf CPU\tp99 of each run")
	for i, s := range r.servers {
		p := r.medianP99(i)
		l := p.latencies
		var sum time.Duration
		for _, d := range l {
			sum += d
		}
		var runs []string
		for _, q := range r.latency[i] {
			runs = append(runs, ms(percentile(q.latencies, 99)))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, len(l), p.lost, ms(sum/time.Duration(len(l))),
			ms(percentile(l, 50)), ms(percentile(l, 99)), ms(percentile(l, 99.9)), ms(l[len(l)-1]), pct(p.serverCPU, p.wall),
			pct(p.clientCPU, p.wall), strings.Join(runs, " "))
	}
	tw.Flush()

	fmt.Fprintln(w, "\nratios (skiff / coredns):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "versus\tqueries/s\tqueries per CPU-second\tp99 latency")
	sk := median(r.throughput[0])
	skp99 := percentile(r.medianP99(0).latencies, 99)
	best := 0.0
	for i := 1; i < len(r.servers); i++ {
		c := median(r.throughput[i])
		ratio := sk.qps / c.qps
		if best == 0 || ratio < best {
			best = ratio // the goal is judged against the fastest CoreDNS
		}
		perCPU := (sk.qps / sk.serverCPU.Seconds() * sk.wall.Seconds()) / (c.qps / c.serverCPU.Seconds() * c.wall.Seconds())
		fmt.Fprintf(tw, "%s\t%.2fx\t%.2fx\t%.2fx\n", r.servers[i].Name, ratio, perCPU,
			float64(skp99)/float64(percentile(r.medianP99(i).latencies, 99)))
	}
	tw.Flush()
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Fprintf(w, "\ngoal ≥ 1.5x the fastest CoreDNS's queries/s: %.2fx, %s\n", best, verdict(best >= 1.5))
	fmt.Fprintf(w, "goal p99 < 1 ms at %d queries/s: %s, %s\n", o.latencyQPS, ms(skp99), verdict(skp99 < time.Millisecond))
}
