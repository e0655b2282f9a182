package cluster

import (
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// testServiceProxyLabels: a Service labelled for another service proxy, or
// as headless, is not programmed (kube-proxy filters both out, and
// upstream's e2e tests check it); taking the label off programs it, and
// putting it back removes it again.
func testServiceProxyLabels(t *testing.T, c *Cluster, echo string) {
	for svc, label := range map[string]string{
		"echo-other-proxy":    "service.kubernetes.io/service-proxy-name",
		"echo-headless-label": v1.IsHeadlessService,
	} {
		t.Run(svc, func(t *testing.T) {
			ip := c.ClusterIP(t, svc)
			c.waitNoFrontend(t, ip)
			c.MustKubectl("label", "service", svc, label+"-")
			c.waitBackends(t, ip, 3)
			out, err := c.Nodes[0].Exec(echo, "get", "http://"+ip+"/", "30")
			checkSpread(t, out, err, 3, 30)
			c.MustKubectl("label", "service", svc, label+"=again")
			c.waitNoFrontend(t, ip)
			if out, err := c.Nodes[1].Exec("curl", "-sS", "--max-time", "2", "http://"+ip+"/"); err == nil {
				t.Errorf("%s answered with the %s label back on: %s", ip, label, out)
			}
		})
	}
}

// testPublishNotReadyAddresses: a Service with publishNotReadyAddresses
// sends traffic to a pod that is not ready.
func testPublishNotReadyAddresses(t *testing.T, c *Cluster, echo string) {
	var pods []v1.Pod
	if err := poll(60*time.Second, func() bool {
		pods = c.Pods(t, "app=unready")
		return len(pods) == 1 && pods[0].Status.Phase == v1.PodRunning
	}); err != nil {
		t.Fatalf("the app=unready pod is not running: %v", err)
	}
	if podReady(&pods[0]) {
		t.Fatalf("%s is ready; its probe should keep it unready", pods[0].Name)
	}
	ip := c.ClusterIP(t, "unready")
	c.waitBackends(t, ip, 1)
	out, err := c.Nodes[2].Exec(echo, "get", "http://"+ip+"/", "5")
	checkSpread(t, out, err, 1, 5)
	if !strings.HasPrefix(out, pods[0].Name+" ") {
		t.Errorf("answered by %q, want the unready pod %s", out, pods[0].Name)
	}
}

// waitNoFrontend waits until no node's load balancer has a frontend on ip,
// as `skiff agent services` shows them.
func (c *Cluster) waitNoFrontend(t testing.TB, ip string) {
	t.Helper()
	var last string
	err := poll(30*time.Second, func() bool {
		for _, n := range c.Nodes {
			out, backends, err := c.frontends(n, ip)
			last = n.Name + ":\n" + out
			if err != nil || len(backends) > 0 {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("the nodes' load balancers still have a frontend on %s; last seen on %s", ip, last)
	}
}
