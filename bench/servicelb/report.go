package main

import (
	"fmt"
	"io"
	"time"
)

type report struct {
	direct, ebpf, iptables result
	ebpfProg               programming
	iptablesSync           time.Duration
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", d.Seconds()*1000) }

func (r report) print(w io.Writer) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-34s %12s %12s %12s %10s %12s\n", "new connections (connect+1 byte)", "conn/s", "p50", "p99", "÷ direct", "÷ iptables")
	for _, row := range []struct {
		name string
		r    result
	}{{"direct to backend", r.direct}, {"ClusterIP, Skiff eBPF", r.ebpf}, {"ClusterIP, kube-proxy iptables", r.iptables}} {
		fmt.Fprintf(w, "%-34s %12.0f %12s %12s %10.2f %12.2f\n", row.name, row.r.rate(), ms(row.r.P50), ms(row.r.P99),
			row.r.rate()/r.direct.rate(), row.r.rate()/r.iptables.rate())
	}
	p := r.ebpfProg
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-34s %12s %12s\n", "programming", "Skiff eBPF", "iptables")
	fmt.Fprintf(w, "%-34s %12s %12s   (eBPF: model+apply of every Service; iptables: one iptables-restore)\n", "full sync", ms(p.fullSync), ms(r.iptablesSync))
	fmt.Fprintf(w, "%-34s %12s %12s   (model+apply for one Service, one endpoint replaced)\n", "endpoint change p50", ms(p.p50), "-")
	fmt.Fprintf(w, "%-34s %12s %12s\n", "endpoint change p99", ms(p.p99), "-")
	fmt.Fprintf(w, "%-34s %9.0f MiB %12s   (whole bench process, maps and objects loaded)\n", "RSS", p.rssMiB, "-")
	fmt.Fprintf(w, "%-34s %d frontends, %d backends, %d slots\n", "map entries", p.entries[0], p.entries[1], p.entries[2])
	fmt.Fprintln(w)
	fmt.Fprintf(w, "goals: eBPF ≥ 0.95 × direct (%.2f), ≥ 1.3 × iptables (%.2f); change p99 < 50 ms (%s); full sync < 2 s (%s)\n",
		r.ebpf.rate()/r.direct.rate(), r.ebpf.rate()/r.iptables.rate(), ms(p.p99), ms(p.fullSync))
}
