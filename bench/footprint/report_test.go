package footprint

import (
	"fmt"
	"io"
	"time"
)

// The goals of issue 17, in decimal megabytes as the issue states them.
const (
	goalServerAgent = 400e6
	goalAgent       = 100e6
	goalStartup     = 10 * time.Second
)

// report is one run's measurements.
type report struct {
	idle        time.Duration
	procs       []proc
	binary      int64
	serverReady time.Duration // server start → API and controllers ready, as it reported
	nodeReady   time.Duration // cluster start → node Ready
	dns         time.Duration // cluster start → cluster DNS answers
	ingress     time.Duration // cluster start → ingress proxy answers
	steps       []step
}

// step is one start-up step a process logged.
type step struct {
	who, what string
	at        time.Duration // since that process started
}

// rss is the resident memory of the processes of one role.
func (r report) rss(role string) int64 {
	var sum int64
	for _, p := range r.procs {
		if p.role == role {
			sum += p.rss
		}
	}
	return sum
}

func (r report) print(w io.Writer) {
	mb := func(n int64) string { return fmt.Sprintf("%7.1f MB", float64(n)/1e6) }
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Fprintf(w, "\nidle footprint of a one-node test cluster, %s after start-up (RSS, 1 MB = 10^6 bytes)\n", r.idle)
	fmt.Fprintf(w, "%-44s %12s %12s %12s  %s\n", "process", "RSS", "anonymous", "file-backed", "goal")
	for _, p := range r.procs {
		fmt.Fprintf(w, "%-44s %12s %12s %12s\n", fmt.Sprintf("%s (pid %d)", p.role, p.pid), mb(p.rss), mb(p.anon), mb(p.file))
	}
	agent := r.rss("agent")
	skiff := r.rss("server") + agent + r.rss("dataplane")
	fmt.Fprintf(w, "%-44s %12s  < 100 MB: %s\n", "agent alone (containerd, data plane apart)", mb(agent), verdict(agent < goalAgent))
	fmt.Fprintf(w, "%-44s %12s  < 400 MB: %s\n", "server + agent + data plane", mb(skiff), verdict(skiff < goalServerAgent))
	fmt.Fprintf(w, "%-44s %12s\n", "... and containerd", mb(skiff+r.rss("containerd")))
	fmt.Fprintf(w, "%-44s %12s\n", "skiff binary", mb(r.binary))
	fmt.Fprintf(w, "\nstart-up (serial, as `skiff server` starts its agent once its API is ready)\n")
	fmt.Fprintf(w, "%-44s %10.1f s\n", "server: exec to ready (its own report)", r.serverReady.Seconds())
	fmt.Fprintf(w, "%-44s %10.1f s\n", "cluster start to node Ready", r.nodeReady.Seconds())
	fmt.Fprintf(w, "%-44s %10.1f s\n", "cluster start to cluster DNS answering", r.dns.Seconds())
	fmt.Fprintf(w, "%-44s %10.1f s  < 10 s: %s\n", "cluster start to ingress answering", r.ingress.Seconds(), verdict(r.ingress < goalStartup))
	fmt.Fprintf(w, "\nstart-up steps (time since each process started)\n")
	for _, s := range r.steps {
		what := s.what
		if len(what) > 90 {
			what = what[:87] + "..."
		}
		fmt.Fprintf(w, "%-7s %8.1f s  %s\n", s.who, s.at.Seconds(), what)
	}
}
