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
	proxies    []*started
	load       string // /proc/loadavg at the start: was the machine shared?
	versions   string
	throughput map[setting][][]*result // [proxy][round]
	latency    map[string][][]*result  // by protocol: [proxy][round]
	rates      []float64               // the fixed rate of each protocol
	idle       []idleMemory            // by proxy
}

// median is the round with the median requests/s.
func median(runs []*result) *result {
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b *result) int { return cmp.Compare(a.rps, b.rps) })
	return s[len(s)/2]
}

// medianP99 is the round with the median p99.
func medianP99(runs []*result) *result {
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b *result) int { return cmp.Compare(a.p99, b.p99) })
	return s[len(s)/2]
}

// each is f of every round, in the order they ran.
func each(runs []*result, f func(*result) string) string {
	out := make([]string, len(runs))
	for i, x := range runs {
		out[i] = f(x)
	}
	return strings.Join(out, " ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// flagged counts the disturbed rounds and names what disturbed them.
func (r *report) flagged(runs []*result) string {
	n := 0
	var why []string
	for _, x := range runs {
		if x.disturbed(r.o) {
			n++
			if x.errors != "" {
				why = append(why, x.errors)
			}
		}
	}
	s := fmt.Sprintf("%d/%d", n, len(runs))
	if len(why) > 0 {
		s += " (" + strings.Join(why, "; ") + ")"
	}
	return s
}

func (r *report) print(w io.Writer) {
	o := r.o
	fmt.Fprintf(w, "\nIngress proxies, each alone on CPU %d (taskset, nice %d); wrk, hey and 2 Go backends on CPU %d\n",
		o.proxyCPU, o.nice, o.loadCPU)
	fmt.Fprintf(w, "load average at start: %s\n%s\n", r.load, r.versions)
	fmt.Fprintf(w, "each cell is the median of %d rounds (proxies interleaved, order rotating each round); "+
		"cpu: cores the proxy's processes used (user+system, /proc/PID/stat); others: share of the proxy's core "+
		"other tasks took; a round is flagged when others > %.0f%% or the load generator saw errors\n",
		o.rounds, 100*o.disturbedAt)
	for _, proto := range o.protos {
		for _, conns := range o.conns {
			runs := r.throughput[setting{proto, conns}]
			fmt.Fprintf(w, "\n%s, wrk -t1 -c%d -d%s, keep-alive\n", strings.ToUpper(proto), conns, o.duration)
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "proxy\treq/s\tp99 ms\tcpu\tothers\tflagged\tskiff/this req/s\tskiff/this p99\tall rounds req/s\t")
			sk := median(runs[0])
			for i, p := range r.proxies {
				m := median(runs[i])
				fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.2f\t%.0f%%\t%s\t%s\t%s\t%s\t\n", p.name, m.rps, ms(m.p99), m.cpu, 100*m.others,
					r.flagged(runs[i]), ratio(sk.rps, m.rps), ratio(float64(sk.p99), float64(m.p99)),
					each(runs[i], func(x *result) string { return fmt.Sprintf("%.0f", x.rps) }))
			}
			tw.Flush()
		}
		if runs, ok := r.latency[proto]; ok {
			rate := r.rates[slices.Index(o.protos, proto)]
			fmt.Fprintf(w, "\n%s at a fixed %.0f requests/s (%.0f%% of nginx's maximum at %d connections), hey -c%d -z%s\n",
				strings.ToUpper(proto), rate, 100*o.latencyRate, o.conns[0], o.conns[0], o.latencyFor)
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "proxy\tachieved req/s\tp99 ms\tcpu\tothers\tflagged\tskiff/this p99\tall rounds p99 ms\t")
			sk := medianP99(runs[0])
			for i, p := range r.proxies {
				m := medianP99(runs[i])
				fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.2f\t%.0f%%\t%s\t%s\t%s\t\n", p.name, m.rps, ms(m.p99), m.cpu, 100*m.others,
					r.flagged(runs[i]), ratio(float64(sk.p99), float64(m.p99)),
					each(runs[i], func(x *result) string { return ms(x.p99) }))
			}
			tw.Flush()
		}
	}
	if len(r.idle) > 0 {
		fmt.Fprintf(w, "\nmemory per idle keep-alive connection: growth of the proxy's resident set (all its processes) "+
			"with %d idle HTTP connections, each after one request\n", o.idleConns)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "proxy\tKiB per connection\tskiff/this\tresident MiB with them\t")
		for i, p := range r.proxies {
			m := r.idle[i]
			fmt.Fprintf(tw, "%s\t%.1f\t%s\t%.1f\t\n", p.name, m.perConn/1024, ratio(r.idle[0].perConn, m.perConn), m.rss/(1<<20))
		}
		tw.Flush()
	}
}
