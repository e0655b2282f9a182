package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// gatewayController is the controllerName of GatewayClass skiff; route
// status entries of other controllers are not ours to check.
const gatewayController = "skiff.io/gateway-controller"

// TestGatewayAPI is issue 7's acceptance points 2 and 4 for the Gateway API:
// a Gateway of class skiff and HTTPRoutes served by a node's proxy, seen from
// the client namespace outside the cluster.
func TestGatewayAPI(t *testing.T) {
	c := Start(t, Options{Nodes: 3, WaitReady: true})
	cfg := c.RESTConfig()
	// 1,000 patches at client-go's default 5 per second would take minutes.
	cfg.QPS, cfg.Burst = 500, 500
	gw, err := gwclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.MustKubectl("apply", "-f", "testdata/gateway.yaml")
	c.WaitRollout(t, "deployment/echo-v1")
	c.WaitRollout(t, "deployment/echo-v2")
	node := c.Nodes[2].IP
	client := &http.Client{
		Transport: &http.Transport{DialContext: dialer(c.ClientNS), MaxIdleConnsPerHost: 16},
		// Redirects are what the test looks at, not something to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       5 * time.Second,
	}
	defer client.CloseIdleConnections()
	get := func(host, path string, header ...string) (*http.Response, gwReply, error) {
		req, err := http.NewRequest(http.MethodGet, "http://"+node+path, nil)
		if err != nil {
			return nil, gwReply{}, err
		}
		req.Host = host
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, gwReply{}, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		var rep gwReply
		if err == nil && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			err = json.Unmarshal(body, &rep)
		}
		return resp, rep, err
	}
	// The first requests can race the routes' and both Deployments'
	// EndpointSlices arriving at the node's proxy: a rollout is complete when
	// the pods are Ready, a moment before the proxy's informer hears of it.
	if err := poll(30*time.Second, func() bool {
		resp, rep, err := get("split.example", "/")
		if err != nil || resp.StatusCode != 200 || rep.Version != "v1" && rep.Version != "v2" {
			return false
		}
		resp, rep, err = get("split.example", "/", "X-Canary", "yes")
		return err == nil && resp.StatusCode == 200 && rep.Version == "v2"
	}); err != nil {
		t.Fatalf("HTTPRoute split never answered on %s: %v", node, err)
	}

	t.Run("Status", func(t *testing.T) {
		ctx := context.Background()
		var g *gatewayv1.Gateway
		err := poll(15*time.Second, func() bool {
			g, err = gw.GatewayV1().Gateways("default").Get(ctx, "gw", metav1.GetOptions{})
			return err == nil && meta.IsStatusConditionTrue(g.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed)) &&
				len(g.Status.Addresses) > 0
		})
		if err != nil {
			t.Fatalf("Gateway gw never Programmed with an address: %+v", g.Status)
		}
		if !meta.IsStatusConditionTrue(g.Status.Conditions, string(gatewayv1.GatewayConditionAccepted)) {
			t.Errorf("Gateway gw not Accepted: %+v", g.Status.Conditions)
		}
		var addrs []string
		for _, a := range g.Status.Addresses {
			addrs = append(addrs, a.Value)
		}
		for _, n := range c.Nodes {
			if !contains(addrs, n.IP) {
				t.Errorf("Gateway addresses %v lack node %s's IP %s", addrs, n.Name, n.IP)
			}
		}
		if len(g.Status.Listeners) != 1 || g.Status.Listeners[0].AttachedRoutes != 4 {
			t.Errorf("listener status %+v, want one listener with 4 attached routes", g.Status.Listeners)
		}

		want := map[string][2]string{ // route → ResolvedRefs status, reason
			"split":    {"True", "ResolvedRefs"},
			"redirect": {"True", "ResolvedRefs"},
			"rewrite":  {"True", "ResolvedRefs"},
			"missing":  {"False", "BackendNotFound"},
		}
		for name, w := range want {
			var last string
			err := poll(15*time.Second, func() bool {
				r, err := gw.GatewayV1().HTTPRoutes("default").Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					last = err.Error()
					return false
				}
				last = fmt.Sprintf("%+v", r.Status.Parents)
				for _, p := range r.Status.Parents {
					if string(p.ControllerName) != gatewayController || string(p.ParentRef.Name) != "gw" {
						continue
					}
					acc := meta.FindStatusCondition(p.Conditions, string(gatewayv1.RouteConditionAccepted))
					res := meta.FindStatusCondition(p.Conditions, string(gatewayv1.RouteConditionResolvedRefs))
					return acc != nil && acc.Status == metav1.ConditionTrue && acc.ObservedGeneration == r.Generation &&
						res != nil && string(res.Status) == w[0] && res.Reason == w[1]
				}
				return false
			})
			if err != nil {
				t.Errorf("HTTPRoute %s: want Accepted=True, ResolvedRefs=%s (%s) from %s; status parents: %s",
					name, w[0], w[1], gatewayController, last)
			}
		}
		if resp, _, err := get("missing.example", "/"); err != nil || resp.StatusCode != 500 {
			t.Errorf("route whose only backend does not exist: want 500, got %v %v", resp, err)
		}
	})

	t.Run("HeaderMatch", func(t *testing.T) {
		for range 20 {
			resp, rep, err := get("split.example", "/", "X-Canary", "yes")
			if err != nil || resp.StatusCode != 200 || rep.Version != "v2" {
				t.Fatalf("X-Canary: yes should always reach v2: %v %+v %v", resp, rep, err)
			}
		}
	})

	t.Run("Weights", func(t *testing.T) {
		const n, workers = 2000, 8
		var mu sync.Mutex
		counts := map[string]int{}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					resp, rep, err := get("split.example", "/")
					key := rep.Version
					if err != nil || resp.StatusCode != 200 {
						key = fmt.Sprintf("error %v %v", statusOf(resp), err)
					}
					mu.Lock()
					counts[key]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		// Binomial(2000, 0.1): mean 200, standard deviation 13.4; allow
		// about 4.5 of them, so a fair 90/10 split fails once in 10^5 runs.
		if counts["v1"]+counts["v2"] != n || counts["v2"] < 140 || counts["v2"] > 260 {
			t.Errorf("90/10 split over %d requests: got %v, want v2 within 200±60 and no errors", n, counts)
		}
		t.Logf("90/10 split over %d requests: %v", n, counts)
	})

	t.Run("Redirect", func(t *testing.T) {
		resp, _, err := get("redirect.example", "/old/page?q=1")
		if err != nil || resp.StatusCode != 301 || resp.Header.Get("Location") != "http://moved.example/new/page?q=1" {
			t.Errorf("GET redirect.example/old/page?q=1: want 301 to http://moved.example/new/page?q=1, got %v %v",
				describe(resp), err)
		}
		resp, _, err = get("redirect.example", "/secure/x")
		if err != nil || resp.StatusCode != 302 || resp.Header.Get("Location") != "https://redirect.example/secure/x" {
			t.Errorf("GET redirect.example/secure/x: want 302 to https://redirect.example/secure/x, got %v %v",
				describe(resp), err)
		}
	})

	t.Run("Rewrite", func(t *testing.T) {
		for path, want := range map[string]string{"/api/items?x=1": "/backend/items?x=1", "/api": "/backend"} {
			resp, rep, err := get("rewrite.example", path)
			if err != nil || resp.StatusCode != 200 || rep.Path != want || rep.Version != "v1" {
				t.Errorf("GET rewrite.example%s: echo saw path %q (status %v, err %v), want %q", path, rep.Path, statusOf(resp), err, want)
			}
		}
	})

	t.Run("NewRouteWithin1s", func(t *testing.T) {
		route := &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: "late"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
				Hostnames:       []gatewayv1.Hostname{"late.example"},
				Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("echo-v1", 80)}}},
			},
		}
		if _, err := gw.GatewayV1().HTTPRoutes("default").Create(context.Background(), route, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for {
			resp, _, err := get("late.example", "/")
			if err == nil && resp.StatusCode == 200 {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("new HTTPRoute never served: %v %v", statusOf(resp), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("new HTTPRoute served after %v, want within 1 s", d)
		}
	})

	t.Run("RouteChangesUnderLoad", func(t *testing.T) {
		routeChangesUnderLoad(t, c, gw, node, get)
	})
}

// routeChangesUnderLoad is acceptance point 4: hey keeps requesting an
// unchanged route while another route is patched 1,000 times; every request
// must succeed, and the last change must be what the proxy serves.
func routeChangesUnderLoad(t *testing.T, c *Cluster, gw gwclient.Interface,
	node string, get func(host, path string, header ...string) (*http.Response, gwReply, error)) {
	ctx := context.Background()
	routes := gw.GatewayV1().HTTPRoutes("default")
	churn := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "churn"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gatewayv1.Hostname{"churn.example"},
			Rules: []gatewayv1.HTTPRouteRule{{
				Matches:     []gatewayv1.HTTPRouteMatch{pathPrefix("/v0")},
				BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("echo-v2", 80)},
			}},
		},
	}
	if _, err := routes.Create(ctx, churn, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// hey runs until interrupted below, however long the changes take on a
	// busy machine; -z only bounds it if the test dies first.
	hey, err := command(c.ClientNS, "", "hey", "-z", "10m", "-c", "8", "-host", "split.example", "http://"+node+"/")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	hey.Stdout, hey.Stderr = &out, &out
	if err := hey.Start(); err != nil {
		t.Fatalf("hey (apt-get install hey): %v", err)
	}
	heyDone := make(chan error, 1)
	go func() { heyDone <- hey.Wait() }()
	t.Cleanup(func() { hey.Process.Kill() })
	time.Sleep(time.Second)

	const changes = 1000
	start := time.Now()
	for i := 1; i <= changes; i++ {
		// A JSON patch of the path and a header match: each is a new
		// generation the proxy must compile and swap in.
		patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/rules/0/matches/0","value":{"path":{"type":"PathPrefix","value":"/v%d"},"headers":[{"name":"X-Change","value":"%d"}]}}]`, i, i)
		if _, err := routes.Patch(ctx, "churn", types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		select {
		case err := <-heyDone:
			t.Fatalf("hey ended after %d of %d changes (%v):\n%s", i, changes, err, out.String())
		default:
		}
	}
	t.Logf("%d route changes in %v", changes, time.Since(start).Round(time.Millisecond))
	// The last change is served (within the debounce), the first is gone.
	if err := poll(5*time.Second, func() bool {
		resp, rep, err := get("churn.example", fmt.Sprintf("/v%d", changes), "X-Change", fmt.Sprint(changes))
		return err == nil && resp.StatusCode == 200 && rep.Version == "v2"
	}); err != nil {
		t.Errorf("the last route change was never served")
	}
	if resp, _, err := get("churn.example", "/v0"); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET churn.example/v0 after the changes: %v %v, want 404", statusOf(resp), err)
	}

	// SIGINT makes hey stop and print its report (nsenter exec'd it).
	hey.Process.Signal(os.Interrupt)
	select {
	case <-heyDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("hey did not stop on SIGINT:\n%s", out.String())
	}
	report := out.String()
	codes := heyStatusCodes(report)
	if len(codes) != 1 || codes[0] != "200" || strings.Contains(report, "Error distribution") {
		t.Errorf("responses other than 200 on an unchanged route during %d route changes (codes %v):\n%s", changes, codes, report)
	}
	t.Logf("hey during the changes:\n%s", summary(report))
}

// gwReply is the part of the echo server's JSON answer the tests read.
type gwReply struct {
	Pod     string              `json:"pod"`
	Version string              `json:"version"`
	Path    string              `json:"path"`
	Header  map[string][]string `json:"header"`
}

func backendRef(svc string, port int32) gatewayv1.HTTPBackendRef {
	p := gatewayv1.PortNumber(port)
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(svc), Port: &p},
	}}
}

func pathPrefix(p string) gatewayv1.HTTPRouteMatch {
	t := gatewayv1.PathMatchPathPrefix
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: &t, Value: &p}}
}

func statusOf(resp *http.Response) any {
	if resp == nil {
		return "no response"
	}
	return resp.StatusCode
}

func describe(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	return fmt.Sprintf("%d Location=%q", resp.StatusCode, resp.Header.Get("Location"))
}

// summary is hey's report up to its latency histogram, plus the status
// codes: enough to see the request count and rate in the test log.
func summary(report string) string {
	head, _, _ := strings.Cut(report, "Response time histogram:")
	_, codes, _ := strings.Cut(report, "Status code distribution:")
	return strings.TrimSpace(head) + "\nStatus code distribution:" + strings.TrimRight(codes, "\n")
}
