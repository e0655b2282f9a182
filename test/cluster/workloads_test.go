package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/images"
)

// TestWorkloads covers issue 3's acceptance points 3, 4, 5 and 7 on one
// cluster; the subtests run in parallel because most of their time is spent
// waiting for back-offs and schedules.
func TestWorkloads(t *testing.T) {
	c := Start(t, Options{Nodes: 3, WaitReady: true})
	t.Run("group", func(t *testing.T) {
		t.Run("ConfigAndSecrets", func(t *testing.T) { t.Parallel(); testConfig(t, c) })
		t.Run("Storage", func(t *testing.T) { t.Parallel(); testStorage(t, c) })
		t.Run("Failures", func(t *testing.T) { t.Parallel(); testFailures(t, c) })
		t.Run("Controllers", func(t *testing.T) { t.Parallel(); testControllers(t, c) })
		t.Run("LatePush", func(t *testing.T) { t.Parallel(); testLatePush(t, c) })
	})
}

func testConfig(t *testing.T, c *Cluster) {
	c.MustKubectl("apply", "-f", "testdata/config.yaml")
	c.WaitPod(t, "config", podReady)
	want := map[string]string{
		"/env/GREETING": "hello", "/env/PASSWORD": "s3cret", "/env/CM_color": "blue", "/env/MEM_LIMIT": "33554432",
		"/file/etc/settings/greeting": "hello", "/file/etc/creds/password": "s3cret",
	}
	for path, v := range want {
		if got := c.PodGet(t, "config", path); got != v {
			t.Errorf("GET %s = %q, want %q", path, got, v)
		}
	}
	if tok := c.PodGet(t, "config", "/file/etc/info/token"); strings.Count(tok, ".") != 2 {
		t.Errorf("projected service account token is not a JWT: %q", tok)
	}
	if l := c.PodGet(t, "config", "/file/etc/info/labels"); !strings.Contains(l, `app="config"`) {
		t.Errorf("downward API labels: %q", l)
	}
	p := c.GetPod(t, "config")
	if p.Status.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("QoS class %s, want Guaranteed", p.Status.QOSClass)
	}
	c.MustKubectl("patch", "configmap", "settings", "-p", `{"data":{"greeting":"bonjour"}}`)
	err := poll(60*time.Second, func() bool { return c.PodGet(t, "config", "/file/etc/settings/greeting") == "bonjour" })
	if err != nil {
		t.Errorf("ConfigMap update not in the mounted file within 60 s: %v", err)
	}
	c.WaitPod(t, "missing-key", waitingReason("CreateContainerConfigError"))
}

func testStorage(t *testing.T, c *Cluster) {
	c.MustKubectl("apply", "-f", "testdata/storage.yaml")
	c.WaitPod(t, "writer", podReady)
	c.PodPut(t, "writer", "/file/data/kept", "across restarts")
	node := c.GetPod(t, "writer").Spec.NodeName
	c.MustKubectl("delete", "pod", "writer", "--wait")
	// The claim is bound to the first node's local volume: the new pod must
	// land there and see the data.
	c.MustKubectl("apply", "-f", "testdata/storage.yaml")
	c.WaitPod(t, "writer", podReady)
	if got := c.GetPod(t, "writer").Spec.NodeName; got != node {
		t.Errorf("pod with a local-path claim moved from %s to %s", node, got)
	}
	if got := c.PodGet(t, "writer", "/file/data/kept"); got != "across restarts" {
		t.Errorf("data after restart: %q", got)
	}
	c.WaitRollout(t, "statefulset/web")
	var created []time.Time
	for i := range 3 {
		name := fmt.Sprintf("web-%d", i)
		p := c.GetPod(t, name)
		created = append(created, p.CreationTimestamp.Time)
		pvc, err := c.Client().CoreV1().PersistentVolumeClaims("default").Get(context.Background(), "www-"+name, metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != corev1.ClaimBound {
			t.Errorf("claim www-%s: %v %v", name, err, pvc.Status.Phase)
		}
	}
	if !created[0].Before(created[1]) && !created[0].Equal(created[1]) || created[2].Before(created[1]) {
		t.Errorf("StatefulSet pods not created in order: %v", created)
	}
}

func testFailures(t *testing.T, c *Cluster) {
	c.MustKubectl("apply", "-f", "testdata/failures.yaml")
	c.WaitPod(t, "crasher", waitingReason("CrashLoopBackOff"))
	// Upstream back-off doubles from 10 s: the gap before the third start
	// is longer than the gap before the second.
	var starts []time.Time
	err := poll(90*time.Second, func() bool {
		p := c.GetPod(t, "crasher")
		cs := p.Status.ContainerStatuses
		if len(cs) == 0 || cs[0].LastTerminationState.Terminated == nil {
			return false
		}
		s := cs[0].LastTerminationState.Terminated.StartedAt.Time
		if len(starts) == 0 || !s.Equal(starts[len(starts)-1]) {
			starts = append(starts, s)
		}
		return len(starts) >= 3
	})
	if err != nil {
		t.Fatalf("crasher restarts seen at %v: %v", starts, err)
	}
	if g1, g2 := starts[1].Sub(starts[0]), starts[2].Sub(starts[1]); g2 <= g1 || g1 < 5*time.Second {
		t.Errorf("back-off did not grow: gaps %v then %v", g1, g2)
	}

	c.WaitPod(t, "unready", func(p *corev1.Pod) bool { return p.Status.PodIP != "" && p.Status.Phase == corev1.PodRunning })
	time.Sleep(3 * time.Second)
	if podReady(c.GetPod(t, "unready")) {
		t.Error("pod failing its readiness probe is Ready")
	}
	err = poll(30*time.Second, func() bool {
		slices, err := c.Client().DiscoveryV1().EndpointSlices("default").List(context.Background(),
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=unready"})
		if err != nil || len(slices.Items) == 0 || len(slices.Items[0].Endpoints) != 1 {
			return false
		}
		ep := slices.Items[0].Endpoints[0]
		return ep.Conditions.Ready != nil && !*ep.Conditions.Ready
	})
	if err != nil {
		t.Errorf("EndpointSlice of the unready pod does not show it not ready: %v", err)
	}
}

func testControllers(t *testing.T, c *Cluster) {
	c.MustKubectl("apply", "-f", "testdata/controllers.yaml")
	c.WaitRollout(t, "daemonset/everywhere")
	nodes := map[string]bool{}
	for _, p := range c.Pods(t, "app=everywhere") {
		nodes[p.Spec.NodeName] = true
	}
	if len(nodes) != len(c.Nodes) {
		t.Errorf("DaemonSet pods on %d nodes, want %d", len(nodes), len(c.Nodes))
	}
	err := poll(120*time.Second, func() bool {
		out, _ := c.Kubectl("get", "job", "failing", "-o", "jsonpath={.status.conditions[?(@.type=='Failed')].reason}")
		return out == "BackoffLimitExceeded"
	})
	if err != nil {
		t.Errorf("Job with backoffLimit 2 did not fail with BackoffLimitExceeded: %v", err)
	}
	if n := len(c.Pods(t, "job-name=failing")); n != 3 {
		t.Errorf("failing Job ran %d pods, want 3 (1 + backoffLimit 2)", n)
	}
	err = poll(150*time.Second, func() bool {
		out, _ := c.Kubectl("get", "cronjob", "ticker", "-o", "jsonpath={.status.lastSuccessfulTime}")
		return out != ""
	})
	if err != nil {
		t.Errorf("CronJob never completed a run: %v", err)
	}
}

// testLatePush: a missing image fails to pull and backs off; once pushed to
// the registry it is pulled and runs.
func testLatePush(t *testing.T, c *Cluster) {
	ref := Registry + "/late/echo:v1"
	c.MustKubectl("run", "late", "--image", ref, "--image-pull-policy", "Always")
	c.WaitPod(t, "late", waitingReason("ErrImagePull", "ImagePullBackOff"))
	c.WaitPod(t, "late", waitingReason("ImagePullBackOff"))
	// Args make this image differ from the preloaded echo:v1: containerd
	// 1.6's CRI loses a tag when a pull brings an image ID it already has
	// under another name (seen here: echo:v1 then failed to resolve).
	img, err := images.Build(images.Spec{Ref: ref, Binary: filepath.Join(filepath.Dir(c.Bin), "bin", "echo-v1"), Path: "/echo",
		Args: []string{"-udp", ":9002"}})
	if err != nil {
		t.Fatal(err)
	}
	c.Push(img, "late/echo:v1")
	c.WaitPod(t, "late", podReady)
}
