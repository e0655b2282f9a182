package cluster

import (
	"strings"
	"testing"
	"time"
)

// TestRolloutUnderLoad is the "rolling updates" acceptance point of the
// data-plane issue: the demo as users get it (examples/demo) rolls twice —
// `rollout restart`, then `set image` from echo v1 to v2 — while clients
// keep sending requests through the ClusterIP (from a node, through its
// socket load balancer) and through the Ingress (from outside the cluster),
// and not one request fails. The demo's readinessProbe, preStop sleep and
// grace period are what make that possible (docs/servicelb.md, "Rolling
// updates without errors"): without the preStop sleep the old pods stop
// listening before every node has dropped them, and ClusterIP connections
// balanced to them in that window are refused.
func TestRolloutUnderLoad(t *testing.T) {
	c := Start(t, Options{Nodes: 2, WaitReady: true})
	c.MustKubectl("apply", "-f", "../../examples/demo/demo.yaml")
	c.WaitRollout(t, "deployment/demo")
	ip := c.ClusterIP(t, "demo")
	c.waitBackends(t, ip, 2)
	ingressNode := c.Nodes[1].IP
	if err := poll(60*time.Second, func() bool {
		out, _ := c.ClientExec("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
			"-H", "Host: demo.localhost", "http://"+ingressNode+"/")
		return out == "200"
	}); err != nil {
		t.Fatalf("the demo's Ingress never answered 200 on %s", ingressNode)
	}

	// Through the ClusterIP, two kinds of clients. Keep-alive ones, as in
	// the report this test comes from (hey -c 20): when an old pod's server
	// shuts down it closes their idle connections and they all reconnect
	// at that instant, so if the pod is still in the node's maps then, about
	// half of them are sent to a closed port and refused. And a new
	// connection per request, so that every request asks the load
	// balancer for a backend throughout.
	viaClusterIP := StartHey(t, c.Nodes[0].NS, c.Nodes[0].CgroupDir(),
		"-z", "10m", "-c", "20", "-q", "10", "http://"+ip+"/")
	viaClusterIPNew := StartHey(t, c.Nodes[0].NS, c.Nodes[0].CgroupDir(),
		"-z", "10m", "-c", "4", "-q", "50", "-disable-keepalive", "http://"+ip+"/")
	viaIngress := StartHey(t, c.ClientNS, "",
		"-z", "10m", "-c", "4", "-q", "100", "-host", "demo.localhost", "http://"+ingressNode+"/")
	time.Sleep(2 * time.Second)

	c.MustKubectl("rollout", "restart", "deployment/demo")
	c.waitRolledOut(t, "deployment/demo", "app=demo")
	c.MustKubectl("set", "image", "deployment/demo", "echo=skiff.local/echo:v2")
	c.waitRolledOut(t, "deployment/demo", "app=demo")
	time.Sleep(time.Second)

	for _, h := range []struct {
		name string
		hey  *Hey
	}{
		{"ClusterIP " + ip + " from " + c.Nodes[0].Name + ", keep-alive", viaClusterIP},
		{"ClusterIP " + ip + " from " + c.Nodes[0].Name + ", a connection per request", viaClusterIPNew},
		{"Ingress on " + ingressNode, viaIngress},
	} {
		r := h.hey.Stop(t)
		t.Logf("%s: %d responses %v, %d errors", h.name, r.Total(), r.Codes, r.Errors)
		if r.Errors != 0 || len(r.Codes) != 1 || r.Codes[200] == 0 {
			t.Errorf("%s: requests failed during the rollouts: status codes %v, %d errors\n%s", h.name, r.Codes, r.Errors, r.Report)
		}
		// The load must have been there all along for 0 errors to mean
		// something: two rollouts with 5 s preStop sleeps take well over
		// 20 s, at 200-400 requests/s per client.
		if r.Total() < 2000 {
			t.Errorf("%s: only %d responses; the load did not run through the rollouts\n%s", h.name, r.Total(), r.Report)
		}
	}
	for _, p := range c.Pods(t, "app=demo") {
		if out := c.MustKubectl("exec", p.Name, "--", "/echo", "-version"); strings.TrimSpace(out) != "v2" {
			t.Errorf("%s runs %q after set image, want v2", p.Name, out)
		}
	}
}

// waitRolledOut waits for the rollout and then for the old pods to be gone,
// so their whole termination (preStop, SIGTERM, exit) happens under load.
func (c *Cluster) waitRolledOut(t *testing.T, obj, selector string) {
	t.Helper()
	c.WaitRollout(t, obj)
	if err := poll(60*time.Second, func() bool {
		for _, p := range c.Pods(t, selector) {
			if p.DeletionTimestamp != nil {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("old pods of %s still terminating a minute after the rollout", obj)
	}
}
