package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestNetworkPolicy is issue 15's end-to-end check on the real path: pods
// on two nodes, requests made from inside pods with the echo image's
// client, policies enforced by the eBPF programs on the pods' host veths.
//
//	np-a (team=red):  server (node 0; http 8080 named "http", udp 9001), client-a (node 1, app=client)
//	np-b (team=blue): client-b (node 1, app=client), other-b (node 0, app=other)
func TestNetworkPolicy(t *testing.T) {
	c := Start(t, Options{Nodes: 2, WaitReady: true})
	dir := t.TempDir()
	apply := func(t *testing.T, name, doc string) {
		t.Helper()
		p := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		c.MustKubectl("apply", "-f", p)
	}
	n0, n1 := c.Nodes[0].Name, c.Nodes[1].Name
	apply(t, "workload", `
apiVersion: v1
kind: Namespace
metadata: {name: np-a, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: np-b, labels: {team: blue}}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: np-a}
spec:
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: server-local, namespace: np-a}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: http}]
---
`+EchoPodYAML("np-a", "server", n0, "server")+EchoPodYAML("np-a", "client-a", n1, "client")+
		EchoPodYAML("np-b", "client-b", n1, "client")+EchoPodYAML("np-b", "other-b", n0, "other"))
	ips := map[string]string{}
	for _, p := range []string{"np-a/server", "np-a/client-a", "np-b/client-b", "np-b/other-b"} {
		ns, name, _ := strings.Cut(p, "/")
		ips[name] = c.waitNetpolPod(t, ns, name)
	}
	server := "http://" + ips["server"] + ":8080/"
	serverUDP := ips["server"] + ":9001"
	clusterIP := strings.TrimSpace(c.MustKubectl("get", "service", "-n", "np-a", "server", "-o", "jsonpath={.spec.clusterIP}"))
	reset := func(t *testing.T) {
		t.Helper()
		c.MustKubectl("delete", "networkpolicy", "--all", "-n", "np-a", "--wait")
		c.MustKubectl("delete", "networkpolicy", "--all", "-n", "np-b", "--wait")
	}

	t.Run("NoPolicyAllowsAll", func(t *testing.T) {
		c.expectReach(t, reach{"np-a/client-a", server, true}, reach{"np-b/client-b", server, true},
			reach{"np-b/other-b", "udp:" + serverUDP, true})
	})
	t.Run("DefaultDenyIngress", func(t *testing.T) {
		defer reset(t)
		apply(t, "deny", netpolDoc("np-a", "deny", `podSelector: {}
  policyTypes: [Ingress]`))
		c.expectReach(t, reach{"np-a/client-a", server, false}, reach{"np-b/client-b", server, false},
			reach{"np-b/other-b", "udp:" + serverUDP, false})
		// The denied flows stream while a client is refused.
		flows := make(chan string, 1)
		go func() {
			out, _ := c.Nodes[0].Exec("timeout", "8", c.Bin, "agent", "flows", "--denied", "--node-name", n0)
			flows <- out
		}()
		time.Sleep(time.Second)
		c.expectReach(t, reach{"np-b/client-b", server, false})
		// The kubelet's probes come from the node: still allowed.
		time.Sleep(2 * time.Second)
		if p := c.netpolPod(t, "np-a", "server"); !podReady(p) {
			t.Errorf("server is not Ready under default deny: its readiness probe was dropped")
		}
		if out := <-flows; !strings.Contains(out, "denied ingress tcp  "+ips["client-b"]) || !strings.Contains(out, ips["server"]+":8080") {
			t.Errorf("skiff agent flows --denied does not show %s -> %s:8080:\n%s", ips["client-b"], ips["server"], out)
		}
		out, err := c.Nodes[0].Exec(c.Bin, "agent", "policy", "--node-name", n0)
		if err != nil || !strings.Contains(out, "np-a/server") || !strings.Contains(out, "np-a/deny") {
			t.Errorf("skiff agent policy on %s does not list np-a/server under np-a/deny (%v):\n%s", n0, err, out)
		}
		metrics, _ := c.Nodes[0].Exec("curl", "-sS", "--max-time", "5", "http://"+c.Nodes[0].IP+":10249/metrics")
		if !strings.Contains(metrics, `skiff_netpol_dropped_packets_total{direction="ingress"}`) ||
			strings.Contains(metrics, `skiff_netpol_dropped_packets_total{direction="ingress"} 0`) {
			t.Errorf("the node's metrics count no ingress drops:\n%s", grepLines(metrics, "skiff_netpol"))
		}
	})
	t.Run("AllowByPodSelector", func(t *testing.T) {
		defer reset(t)
		apply(t, "pods", netpolDoc("np-a", "from-clients", `podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]`))
		// client-b carries the label too, but in another namespace.
		c.expectReach(t, reach{"np-a/client-a", server, true}, reach{"np-b/client-b", server, false})
	})
	t.Run("AllowByNamespaceSelector", func(t *testing.T) {
		defer reset(t)
		apply(t, "ns", netpolDoc("np-a", "from-blue-clients", `podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {app: client}}}]}]`))
		c.expectReach(t, reach{"np-b/client-b", server, true}, reach{"np-b/other-b", server, false},
			reach{"np-a/client-a", server, false})
	})
	t.Run("AllowByIPBlockWithExcept", func(t *testing.T) {
		defer reset(t)
		apply(t, "cidr", netpolDoc("np-a", "cidr", fmt.Sprintf(`podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [%s/32]}}]}]`, ips["client-b"])))
		c.expectReach(t, reach{"np-a/client-a", server, true}, reach{"np-b/other-b", server, true},
			reach{"np-b/client-b", server, false})
	})
	t.Run("NodePortClientByIPBlock", func(t *testing.T) {
		// externalTrafficPolicy Local keeps the client's address.
		defer reset(t)
		echo := filepath.Join(filepath.Dir(c.Bin), "bin", "echo-v1")
		port := strings.TrimSpace(c.MustKubectl("get", "service", "-n", "np-a", "server-local", "-o", "jsonpath={.spec.ports[0].nodePort}"))
		url := fmt.Sprintf("http://%s:%s/", c.Nodes[0].IP, port)
		fromOutside := func() bool { _, err := c.ClientExec(echo, "get", url, "1"); return err == nil }
		apply(t, "outside", netpolDoc("np-a", "outside", fmt.Sprintf(`podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{ipBlock: {cidr: %s/32}}]}]`, clientIP)))
		if err := poll(20*time.Second, fromOutside); err != nil {
			t.Errorf("the client %s is refused at %s though an ipBlock allows it", clientIP, url)
		}
		apply(t, "outside", netpolDoc("np-a", "outside", fmt.Sprintf(`podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{ipBlock: {cidr: %s, except: [%s/32]}}]}]`, netip.MustParsePrefix(clientIP+"/24").Masked(), clientIP)))
		if err := poll(20*time.Second, func() bool { return !fromOutside() }); err != nil {
			t.Errorf("the client %s reaches %s though the ipBlock excepts it", clientIP, url)
		}
	})
	t.Run("AllowByPort", func(t *testing.T) {
		defer reset(t)
		apply(t, "ports", netpolDoc("np-a", "named", `podSelector: {matchLabels: {app: server}}
  ingress: [{ports: [{port: http}]}]`))
		c.expectReach(t, reach{"np-b/client-b", server, true}, reach{"np-b/client-b", "udp:" + serverUDP, false})
		apply(t, "range", netpolDoc("np-a", "udp-range", `podSelector: {matchLabels: {app: server}}
  ingress: [{ports: [{protocol: UDP, port: 9000, endPort: 9001}]}]`))
		c.expectReach(t, reach{"np-b/client-b", "udp:" + serverUDP, true}, reach{"np-b/client-b", server, true})
		c.MustKubectl("delete", "networkpolicy", "-n", "np-a", "named")
		c.expectReach(t, reach{"np-b/client-b", server, false}, reach{"np-b/client-b", "udp:" + serverUDP, true})
	})
	t.Run("ClusterIPJudgedByBackend", func(t *testing.T) {
		defer reset(t)
		apply(t, "svc", netpolDoc("np-a", "from-a", `podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {}}]}]`))
		url := "http://" + clusterIP + "/"
		c.expectReach(t, reach{"np-a/client-a", url, true}, reach{"np-b/client-b", url, false})
	})
	t.Run("RepliesPass", func(t *testing.T) {
		defer reset(t)
		// The server may send nothing of its own; answers still go out.
		apply(t, "replies", netpolDoc("np-a", "isolated", `podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress, Egress]
  ingress: [{}]`))
		c.expectReach(t, reach{"np-b/client-b", server, true}, reach{"np-a/server", "http://" + ips["other-b"] + ":8080/", false})
	})
	t.Run("EgressWithDNS", func(t *testing.T) {
		defer reset(t)
		// Through DNS and the Service's ClusterIP (port 80).
		byName := "http://server.np-a.svc.cluster.local/"
		otherB := "http://" + ips["other-b"] + ":8080/"
		apply(t, "egress", netpolDoc("np-b", "only-server", `podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {team: red}}, podSelector: {matchLabels: {app: server}}}]}]`))
		// No DNS rule: the name does not resolve; the address still works.
		c.expectReach(t, reach{"np-b/client-b", byName, false}, reach{"np-b/client-b", server, true},
			reach{"np-b/client-b", otherB, false}, reach{"np-b/other-b", byName, true})
		apply(t, "dns-port", netpolDoc("np-b", "dns-port", `podSelector: {}
  policyTypes: [Egress]
  egress: [{ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]}]`))
		c.expectReach(t, reach{"np-b/client-b", byName, true}, reach{"np-b/client-b", otherB, false})
		c.MustKubectl("delete", "networkpolicy", "-n", "np-b", "dns-port")
		apply(t, "dns-ns", netpolDoc("np-b", "dns-kube-system", `podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}], ports: [{protocol: UDP, port: 53}]}]`))
		c.expectReach(t, reach{"np-b/client-b", byName, true}, reach{"np-b/client-b", otherB, false})
	})
	t.Run("BadInput", func(t *testing.T) {
		defer reset(t)
		// What the API can judge it rejects, naming the field.
		for _, bad := range []struct{ name, spec, field string }{
			{"bad-cidr", `podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]`, "ipBlock.cidr"},
			{"bad-except", `podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [192.168.0.0/24]}}]}]`, "ipBlock.except"},
			{"bad-selector", `podSelector: {matchExpressions: [{key: app, operator: Bogus}]}
  policyTypes: [Ingress]`, "podSelector.matchExpressions[0].operator"},
		} {
			p := filepath.Join(dir, bad.name+".yaml")
			if err := os.WriteFile(p, []byte(netpolDoc("np-a", bad.name, bad.spec)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := c.Kubectl("apply", "-f", p)
			if err == nil || !strings.Contains(out, bad.field) {
				t.Errorf("kubectl apply of %s: err %v, want an error naming %s:\n%s", bad.name, err, bad.field, out)
			}
		}
		if out := c.MustKubectl("get", "networkpolicy", "-n", "np-a", "-o", "name"); strings.TrimSpace(out) != "" {
			t.Errorf("rejected policies exist: %s", out)
		}
		// A policy that selects nothing changes nothing.
		apply(t, "nobody", netpolDoc("np-a", "nobody", `podSelector: {matchLabels: {app: nobody}}
  policyTypes: [Ingress, Egress]`))
		c.expectReach(t, reach{"np-b/client-b", server, true}, reach{"np-a/server", "http://" + ips["other-b"] + ":8080/", true})
		// A port name no container of the server declares matches nothing
		// (the API cannot know): the server is isolated, nothing reaches it.
		apply(t, "nosuch", netpolDoc("np-a", "nosuch-port", `podSelector: {matchLabels: {app: server}}
  ingress: [{ports: [{port: nosuch}]}]`))
		c.expectReach(t, reach{"np-b/client-b", server, false}, reach{"np-a/client-a", server, false},
			reach{"np-b/client-b", "udp:" + serverUDP, false})
	})
	t.Run("RemovingPoliciesRestoresAccess", func(t *testing.T) {
		apply(t, "deny-all", netpolDoc("np-a", "deny-all", `podSelector: {}
  policyTypes: [Ingress, Egress]`))
		c.expectReach(t, reach{"np-b/client-b", server, false})
		reset(t)
		c.expectReach(t, reach{"np-b/client-b", server, true}, reach{"np-a/client-a", server, true},
			reach{"np-b/other-b", "udp:" + serverUDP, true})
	})
}

func netpolDoc(ns, name, spec string) string {
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: %s, namespace: %s}
spec:
  %s
`, name, ns, spec)
}

func (c *Cluster) netpolPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := c.Client().CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitNetpolPod waits for the pod to be Ready and returns its address.
func (c *Cluster) waitNetpolPod(t *testing.T, ns, name string) string {
	t.Helper()
	var p *corev1.Pod
	if err := poll(3*time.Minute, func() bool {
		var err error
		p, err = c.Client().CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && podReady(p)
	}); err != nil {
		desc, _ := c.Kubectl("describe", "pod", "-n", ns, name)
		t.Fatalf("pod %s/%s not ready: %v\n%s", ns, name, err, desc)
	}
	return p.Status.PodIP
}

// reach is one expectation: from a pod (namespace/name), a request to
// target (an http:// URL, or udp:HOST:PORT) is answered or not.
type reach struct {
	from, target string
	want         bool
}

func (c *Cluster) try(r reach) (bool, string) {
	ns, pod, _ := strings.Cut(r.from, "/")
	args := []string{"exec", "-n", ns, pod, "--", "/echo", "get", r.target, "1"}
	if addr, ok := strings.CutPrefix(r.target, "udp:"); ok {
		args = []string{"exec", "-n", ns, pod, "--", "/echo", "udp", addr, "1"}
	}
	out, err := c.Kubectl(args...)
	return err == nil, out
}

// expectReach checks the expectations concurrently, each retried until it
// holds for up to 20 s: a policy change takes effect within a second, but
// the API, the informers and kubectl exec add their own latency.
func (c *Cluster) expectReach(t *testing.T, rs ...reach) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]string, len(rs))
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out string
			deadline := time.Now().Add(20 * time.Second)
			for {
				var ok bool
				ok, out = c.try(r)
				if ok == r.want {
					return
				}
				if time.Now().After(deadline) {
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
			verb := map[bool]string{true: "reach", false: "be refused"}[r.want]
			errs[i] = fmt.Sprintf("%s should %s %s; last attempt: %s", r.from, verb, r.target, strings.TrimSpace(out))
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Error(e)
		}
	}
	if t.Failed() {
		np, _ := c.Kubectl("get", "networkpolicy", "-A", "-o", "wide")
		t.Logf("policies:\n%s", np)
		for _, n := range c.Nodes {
			out, _ := n.Exec(c.Bin, "agent", "policy", "--node-name", n.Name)
			t.Logf("skiff agent policy on %s:\n%s", n.Name, out)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
