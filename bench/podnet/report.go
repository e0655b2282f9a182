package main

import (
	"fmt"
	"io"
)

// sample collects one path's runs.
type sample struct {
	bps                []float64
	p50, p99, meanRTTs []float64
}

func (s *sample) add(bps float64, r rtt) {
	s.bps = append(s.bps, bps)
	s.p50 = append(s.p50, r.p50)
	s.p99 = append(s.p99, r.p99)
	s.meanRTTs = append(s.meanRTTs, r.mean)
}

// row is one line of the table; peer is what its ratios compare with.
type row struct {
	mode, path string
	s          sample
	peer       *sample
}

func printTable(w io.Writer, rows []row, o options) {
	pin := "unpinned"
	if o.clientCPU != "" {
		pin = fmt.Sprintf("clients on CPU %s, servers on CPU %s", o.clientCPU, o.serverCPU)
	}
	fmt.Fprintf(w, "iperf3 -t %s (1 TCP stream), ping-pong %d × %d B on one TCP connection; median of %d paired runs; %s\n",
		o.duration, o.pings, o.size, o.reps, pin)
	fmt.Fprintf(w, "%-7s %-13s %11s %7s %12s %7s %12s %7s\n",
		"mode", "path", "TCP Gbit/s", "ratio", "RTT p50 µs", "ratio", "RTT p99 µs", "ratio")
	for _, r := range rows {
		ratio := func(v, peer []float64) string {
			if r.peer == nil {
				return ""
			}
			return fmt.Sprintf("%.2fx", pairedRatio(v, peer))
		}
		var peer sample
		if r.peer != nil {
			peer = *r.peer
		}
		fmt.Fprintf(w, "%-7s %-13s %11.2f %7s %12.1f %7s %12.1f %7s\n", r.mode, r.path,
			median(r.s.bps)/1e9, ratio(r.s.bps, peer.bps),
			median(r.s.p50), ratio(r.s.p50, peer.p50),
			median(r.s.p99), ratio(r.s.p99, peer.p99))
	}
	fmt.Fprintln(w, "ratio: median over the paired runs of pod-to-pod / node-to-node (throughput: higher is better, RTT: lower is better)")
}

// pairedRatio is the median of v[i]/peer[i]: each pair ran back to back,
// so it cancels load that changes between pairs better than a ratio of
// medians.
func pairedRatio(v, peer []float64) float64 {
	var rs []float64
	for i := range min(len(v), len(peer)) {
		if peer[i] > 0 {
			rs = append(rs, v[i]/peer[i])
		}
	}
	return median(rs)
}
