package cluster

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/agent/dataplane"
)

// TestDataPlaneOutlivesAgent is the data-plane continuity issue's scenarios
// 1-4 on one node of a 3-node cluster: while hey drives the Ingress (HTTP
// and HTTPS), a ClusterIP and a NodePort through that node, and a pod on
// it resolves a Service name every 10 ms, the node's agent is restarted,
// upgraded, crashes, and the control plane goes away for a minute. Each
// scenario must end with 0 failed requests, 0 non-2xx answers and 0 failed
// or wrong DNS answers. Scenario 5 (rolling updates) is TestRolloutUnderLoad.
func TestDataPlaneOutlivesAgent(t *testing.T) {
	c := Start(t, Options{WaitReady: true})
	n := c.Nodes[0]
	w := c.DeployContinuityWorkload(t, n)
	next := UpgradeBinary(t, c.Bin)
	podsBefore := c.PodRestarts(t)

	scenarios := []struct {
		name    string
		disrupt func(t *testing.T)
	}{
		{"GracefulRestart", func(t *testing.T) { n.RestartAgent(t, n.StopAgent, c.Bin) }},
		{"Upgrade", func(t *testing.T) {
			n.RestartAgent(t, n.StopAgent, next)
			st, err := dataplane.ReadStatus(context.Background(), dataplane.SocketPath(n.Name))
			if err != nil || st.Version != UpgradeVersion || st.Predecessor.Version == UpgradeVersion {
				t.Errorf("after the upgrade the data plane reports %+v (%v); want version %s, taken over from another", st, err, UpgradeVersion)
			}
		}},
		{"Crash", func(t *testing.T) { n.RestartAgent(t, n.KillAgent, c.Bin) }},
		{"ControlPlaneDown", func(t *testing.T) {
			c.OutageOfServer(60 * time.Second)
			back := time.Now()
			// Every agent reconnects on its own: its kubelet renews the node's
			// lease again.
			if err := poll(2*time.Minute, func() bool {
				for _, n := range c.Nodes {
					l, err := c.Client().CoordinationV1().Leases("kube-node-lease").Get(context.Background(), n.Name, metav1.GetOptions{})
					if err != nil || l.Spec.RenewTime == nil || l.Spec.RenewTime.Time.Before(back) {
						return false
					}
				}
				return true
			}); err != nil {
				t.Errorf("not every node renewed its lease within 2 minutes of the server's return")
			}
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			// Settle: the old data plane finishes draining under load.
			for _, r := range c.UnderLoad(t, w, 10, 5*time.Second, func() { sc.disrupt(t) }) {
				t.Logf("%-13s %6d sent, %d failed, %d wrong, slowest %v", r.Path, r.Sent, r.Failed, r.Wrong, r.Slowest.Round(time.Millisecond))
				if r.Sent == 0 || r.Failed > 0 || r.Wrong > 0 {
					t.Errorf("%s during %s: %d of %d failed, %d wrong; want none", r.Path, sc.name, r.Failed, r.Sent, r.Wrong)
				}
			}
		})
	}
	if after := c.PodRestarts(t); after != podsBefore {
		t.Errorf("pods restarted or were replaced: before\n%s\nafter\n%s", podsBefore, after)
	}
}
