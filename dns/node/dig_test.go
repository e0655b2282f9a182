package node_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/dns/dnstest"
	"github.com/skiffnet/skiff/dns/node"
)

// These tests ask the server with the real dig (Debian's dnsutils) over
// loopback, so what is checked is what a client parses off the wire.

type digger struct {
	host, port string
}

// dig runs dig against the server and returns its full output.
func (d digger) dig(t *testing.T, args ...string) string {
	t.Helper()
	args = append([]string{"@" + d.host, "-p", d.port, "+time=3", "+tries=1"}, args...)
	out, err := exec.Command("dig", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// short runs dig +short and returns its lines, sorted.
func (d digger) short(t *testing.T, args ...string) []string {
	t.Helper()
	out := strings.Fields(strings.ReplaceAll(d.dig(t, append(args, "+short")...), "\n", "|"))
	lines := strings.Split(strings.Join(out, " "), "|")
	lines = slices.DeleteFunc(lines, func(s string) bool { return strings.TrimSpace(s) == "" })
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	slices.Sort(lines)
	return lines
}

var statusRE = regexp.MustCompile(`status: ([A-Z]+)`)

func status(t *testing.T, out string) string {
	t.Helper()
	m := statusRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no status in dig output:\n%s", out)
	}
	return m[1]
}

// startDig serves the fixture set from a fake API server on loopback,
// forwarding to upstream.
func startDig(t *testing.T, upstream string) (digger, *fakeAPI) {
	t.Helper()
	if _, err := exec.LookPath("dig"); err != nil {
		t.Fatal("dig not found: apt-get install dnsutils")
	}
	client := fixtureClient()
	s, err := node.New(node.Options{Client: client, Listen: []string{"127.0.0.1:0"}, Upstreams: []string{upstream}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	host, port, err := net.SplitHostPort(s.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	return digger{host, port}, &fakeAPI{client}
}

func TestDig(t *testing.T) {
	up := dnstest.StartUpstream(t,
		"ext.example.com. 300 IN A 192.0.2.7",
		"example.org. 300 IN A 192.0.2.1",
		"example.org. 300 IN MX 10 mail.example.org.",
	)
	d, _ := startDig(t, up.Addr)
	svc := func(s string) string { return s + "." + ns + ".svc.cluster.local." }

	cases := []struct {
		args []string
		want []string
	}{
		{[]string{svc("web")}, []string{"10.96.1.10"}},
		{[]string{"WEB.Ns1.SVC.Cluster.Local"}, []string{"10.96.1.10"}},
		{[]string{"AAAA", svc("dual")}, []string{"fd00:96::11"}},
		{[]string{"SRV", "_http._tcp." + svc("web")}, []string{"0 100 80 " + svc("web")}},
		{[]string{"-x", "10.96.1.10"}, []string{svc("web")}},
		{[]string{"-x", "10.244.1.5"}, []string{"db-0." + svc("db")}},
		{[]string{svc("db")}, []string{"10.244.1.5", "10.244.2.6"}},
		{[]string{"SRV", "_pg._tcp." + svc("db")}, []string{"0 50 5432 10-244-2-6." + svc("db"), "0 50 5432 db-0." + svc("db")}},
		{[]string{"web-ss-1." + svc("web-ss")}, []string{"10.244.2.21"}},
		{[]string{"10-244-9-9." + ns + ".pod.cluster.local"}, []string{"10.244.9.9"}},
		{[]string{"TXT", "dns-version.cluster.local"}, []string{`"1.1.0"`}},
		{[]string{"CNAME", svc("ext")}, []string{"ext.example.com."}},
		{[]string{svc("ext")}, []string{"192.0.2.7", "ext.example.com."}},
		{[]string{"MX", "example.org"}, []string{"10 mail.example.org."}},
		// A short name through a search path, as a pod's resolver asks it.
		{[]string{"+search", "+domain=" + ns + ".svc.cluster.local", "web"}, []string{"10.96.1.10"}},
		// Over TCP, and without EDNS0.
		{[]string{"+tcp", svc("web")}, []string{"10.96.1.10"}},
		{[]string{"+noedns", svc("db")}, []string{"10.244.1.5", "10.244.2.6"}},
	}
	for _, c := range cases {
		if got := d.short(t, c.args...); !slices.Equal(got, c.want) {
			t.Errorf("dig %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}

	// Negative answers: NXDOMAIN for names that do not exist, NODATA
	// (NOERROR, no answer) for names that do, both with the zone's SOA.
	for _, c := range []struct {
		args   []string
		status string
	}{
		{[]string{svc("nope")}, "NXDOMAIN"},
		{[]string{svc("empty")}, "NXDOMAIN"},
		{[]string{"AAAA", svc("web")}, "NOERROR"},
		{[]string{ns + ".svc.cluster.local"}, "NOERROR"},
	} {
		out := d.dig(t, c.args...)
		if s := status(t, out); s != c.status {
			t.Errorf("dig %s: status %s, want %s", strings.Join(c.args, " "), s, c.status)
		}
		if !strings.Contains(out, "ANSWER: 0,") || !regexp.MustCompile(`(?m)^cluster\.local\.\s+\d+\s+IN\s+SOA\s`).MatchString(out) {
			t.Errorf("dig %s: want no answer and the cluster.local. SOA:\n%s", strings.Join(c.args, " "), out)
		}
	}
	out := d.dig(t, svc("web"))
	if !strings.Contains(out, "flags: qr aa rd ra;") || !strings.Contains(out, "; EDNS: version: 0, flags:; udp: 1232") {
		t.Errorf("flags or EDNS0 not as expected:\n%s", out)
	}
}

// A headless Service with 200 endpoints: dig gets a truncated UDP answer
// and retries over TCP, ending with every record.
func TestDigTruncationRetriesOverTCP(t *testing.T) {
	d, api := startDig(t, "127.0.0.1:1")
	var eps []dnstest.Endpoint
	for i := range 200 {
		eps = append(eps, dnstest.Endpoint{IP: fmt.Sprintf("10.244.%d.%d", 10+i/200, i%200+1)})
	}
	api.create(t, dnstest.Service(ns, "big", "None"), dnstest.Slice(ns, "big", "big-1", nil, eps...))
	name := "big." + ns + ".svc.cluster.local."
	waitFor(t, 10*time.Second, func() bool { return len(d.short(t, "+tcp", name)) == 200 })
	out := d.dig(t, "+bufsize=1232", name)
	if !strings.Contains(out, "Truncated, retrying in TCP mode") || !strings.Contains(out, "ANSWER: 200,") {
		t.Errorf("want a truncated UDP answer retried over TCP with 200 records:\n%.2000s", out)
	}
	if got := d.short(t, "+ignore", "+bufsize=1232", name); len(got) == 200 || len(got) > 1232/16 {
		t.Errorf("UDP answer with +ignore has %d records; want it truncated to fit 1232 bytes", len(got))
	}
}

// Answers follow the cluster: an endpoint that turns ready is in dig's
// answer within a second, one that goes away is out.
func TestDigFollowsEndpoints(t *testing.T) {
	d, api := startDig(t, "127.0.0.1:1")
	name := "db." + ns + ".svc.cluster.local."
	setReady := func(ready bool) {
		s, err := api.c.DiscoveryV1().EndpointSlices(ns).Get(context.Background(), "db-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Endpoints[2].Conditions.Ready = &ready
		if _, err := api.c.DiscoveryV1().EndpointSlices(ns).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setReady(true)
	start := time.Now()
	waitFor(t, time.Second, func() bool { return slices.Contains(d.short(t, name), "10.244.3.7") })
	t.Logf("ready endpoint answered by dig after %v", time.Since(start))
	setReady(false)
	start = time.Now()
	waitFor(t, time.Second, func() bool { return !slices.Contains(d.short(t, name), "10.244.3.7") })
	t.Logf("not-ready endpoint gone from dig's answer after %v", time.Since(start))
}

// With the upstream dead, a name answered before is still answered.
func TestDigStaleWhenUpstreamDown(t *testing.T) {
	up := dnstest.StartUpstream(t, "short.example.org. 1 IN A 192.0.2.9")
	d, _ := startDig(t, up.Addr)
	if got := d.short(t, "short.example.org"); !slices.Equal(got, []string{"192.0.2.9"}) {
		t.Fatalf("before: %q", got)
	}
	up.Stop()
	time.Sleep(1200 * time.Millisecond) // past the 1 s TTL
	out := d.dig(t, "short.example.org")
	if status(t, out) != "NOERROR" || !regexp.MustCompile(`short\.example\.org\.\s+\d+\s+IN\s+A\s+192\.0\.2\.9`).MatchString(out) {
		t.Errorf("with the upstream down, want the stale answer:\n%s", out)
	}
	if s := status(t, d.dig(t, "never.example.org")); s != "SERVFAIL" {
		t.Errorf("uncached name with the upstream down: %s, want SERVFAIL", s)
	}
}

// waitFor polls cond for up to 1 s, the bound for answers to follow
// the cluster.
// waitFor polls cond for up to limit: 1 s where the issue asks answers to
// follow the cluster that fast, longer for setting up big fixtures.
func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
