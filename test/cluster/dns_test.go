package cluster

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skiffnet/skiff/images"
)

// TestDNS is issue 6's acceptance points 1 and 2: real dig in a pod asks the
// cluster DNS at the kube-dns ClusterIP (the pod's resolv.conf), which the
// node's load balancer sends to the agent's own server.
func TestDNS(t *testing.T) {
	c := Start(t, Options{Nodes: 3, WaitReady: true})
	img, err := images.Build(toolsImage(t, c))
	if err != nil {
		t.Fatal(err)
	}
	c.Push(img, "tools:v1")
	c.MustKubectl("apply", "-f", "testdata/echo.yaml", "-f", "testdata/dns.yaml")
	c.MustKubectl("run", "tools", "--image", Registry+"/tools:v1")
	c.WaitRollout(t, "deployment/echo")
	c.WaitRollout(t, "statefulset/web")
	c.WaitPod(t, "tools", podReady)
	dig := func(args ...string) string {
		out, err := c.Kubectl(append([]string{"exec", "tools", "--", "/usr/bin/dig", "+time=2", "+tries=1"}, args...)...)
		if err != nil {
			t.Errorf("dig %v: %v", args, err)
		}
		return strings.TrimSpace(out)
	}
	ip := c.ClusterIP(t, "echo")
	web0, web1 := c.GetPod(t, "web-0").Status.PodIP, c.GetPod(t, "web-1").Status.PodIP
	tools := c.GetPod(t, "tools").Status.PodIP
	want := []struct {
		args []string
		want string
	}{
		{[]string{"+short", "echo.default.svc.cluster.local"}, ip},
		{[]string{"+short", "ECHO.Default.SVC.cluster.local"}, ip},
		{[]string{"+short", "+search", "echo"}, ip},
		{[]string{"+short", "+search", "echo.default"}, ip},
		{[]string{"+short", "SRV", "_http._tcp.echo.default.svc.cluster.local"}, "0 100 80 echo.default.svc.cluster.local."},
		{[]string{"+short", "-x", ip}, "echo.default.svc.cluster.local."},
		{[]string{"+short", "web-0.web.default.svc.cluster.local"}, web0},
		{[]string{"+short", "CNAME", "ext.default.svc.cluster.local"}, "example.org."},
		{[]string{"+short", "TXT", "dns-version.cluster.local"}, `"1.1.0"`},
		{[]string{"+short", strings.ReplaceAll(tools, ".", "-") + ".default.pod.cluster.local"}, tools},
	}
	for _, w := range want {
		if got := dig(w.args...); got != w.want {
			t.Errorf("dig %s = %q, want %q", strings.Join(w.args, " "), got, w.want)
		}
	}
	headless := strings.Fields(dig("+short", "web.default.svc.cluster.local"))
	if len(headless) != 2 || !contains(headless, web0) || !contains(headless, web1) {
		t.Errorf("headless web = %v, want %s and %s", headless, web0, web1)
	}
	if srv := dig("+short", "SRV", "_http._tcp.web.default.svc.cluster.local"); !strings.Contains(srv, "web-0.web.default.svc.cluster.local.") {
		t.Errorf("headless SRV should name endpoint hostnames: %q", srv)
	}
	nx := dig("nope.default.svc.cluster.local")
	if !strings.Contains(nx, "status: NXDOMAIN") || !regexp.MustCompile(`(?m)^cluster\.local\.\s+\d+\s+IN\s+SOA`).MatchString(nx) {
		t.Errorf("missing Service: want NXDOMAIN with the zone's SOA:\n%s", nx)
	}
	nodata := dig("AAAA", "echo.default.svc.cluster.local")
	if !strings.Contains(nodata, "status: NOERROR") || !strings.Contains(nodata, "ANSWER: 0") {
		t.Errorf("AAAA of an IPv4 Service: want NOERROR with no answer (NODATA):\n%s", nodata)
	}
	// Short names through the search path, from the echo image's Go resolver.
	if out, err := c.Kubectl("exec", c.Pods(t, "app=echo")[0].Name, "--", "/echo", "get", "http://web:8080/", "1"); err != nil || !strings.HasPrefix(out, "web-") {
		t.Errorf("GET http://web:8080/ from a pod: %q %v", out, err)
	}

	// Answers follow the cluster within a second of the EndpointSlice change.
	c.MustKubectl("scale", "statefulset/web", "--replicas=1")
	if err := poll(60*time.Second, func() bool { return c.endpoints(t, "web") == 1 }); err != nil {
		t.Fatal("web-1 never left the EndpointSlice")
	}
	start := time.Now()
	for {
		if got := strings.Fields(dig("+short", "web.default.svc.cluster.local")); len(got) == 1 && got[0] == web0 {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("headless answer still lists the removed pod 1 s after its endpoint went away")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// toolsImage is the pause binary with the host's dig and the libraries it
// links, so tests run the real dig inside a pod.
func toolsImage(t *testing.T, c *Cluster) images.Spec {
	t.Helper()
	out, err := exec.Command("ldd", "/usr/bin/dig").Output()
	if err != nil {
		t.Fatalf("ldd /usr/bin/dig (apt-get install dnsutils): %v", err)
	}
	files := map[string]string{"/usr/bin/dig": "/usr/bin/dig"}
	for _, m := range regexp.MustCompile(`(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		files[m[1]] = m[1]
	}
	return images.Spec{Ref: Registry + "/tools:v1", Binary: filepath.Join(filepath.Dir(c.Bin), "bin", "pause"), Path: "/pause", Files: files}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
