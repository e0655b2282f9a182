// Package restart measures what clients of a node see while its agent
// restarts, is upgraded, crashes, and while the control plane is down: on a
// 3-node test cluster, hey drives the Ingress (HTTP, HTTPS), a ClusterIP and
// a NodePort through one node, and a pod on it resolves a Service name every
// 10 ms. Per scenario and path it prints the requests sent, failed and wrong,
// and the slowest request (a request that waited across a gap in service
// shows the gap there).
//
//	bench/restart/run.sh      (as root, after make build)
package restart

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/skiffnet/skiff/test/cluster"
)

func BenchmarkRestart(b *testing.B) {
	conc := envInt("CONC", 50)
	outage := time.Duration(envInt("OUTAGE_SECONDS", 60)) * time.Second
	c := cluster.Start(b, cluster.Options{WaitReady: true})
	n := c.Nodes[0]
	w := c.DeployContinuityWorkload(b, n)
	next := cluster.UpgradeBinary(b, c.Bin)
	scenarios := []struct {
		name    string
		disrupt func()
	}{
		{"graceful restart (SIGTERM)", func() { n.RestartAgent(b, n.StopAgent, c.Bin) }},
		{"upgrade (another binary)", func() { n.RestartAgent(b, n.StopAgent, next) }},
		{"crash (SIGKILL)", func() { n.RestartAgent(b, n.KillAgent, c.Bin) }},
		{fmt.Sprintf("control plane down %v", outage), func() { c.OutageOfServer(outage) }},
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "scenario\tpath\tsent\tfailed\twrong\tslowest ms\t\n")
	for b.Loop() {
		for _, sc := range scenarios {
			for _, r := range c.UnderLoad(b, w, conc, 5*time.Second, sc.disrupt) {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t\n", sc.name, r.Path, r.Sent, r.Failed, r.Wrong, r.Slowest.Milliseconds())
			}
		}
	}
	fmt.Printf("\nhey -c %d per path (ingress http, ingress https, clusterip, nodeport) through %s; resolver pod every 10 ms\n", conc, n.Name)
	tw.Flush()
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
