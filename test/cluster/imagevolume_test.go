package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/images"
)

// TestImageVolume covers the upstream conformance test "ImageVolume should
// succeed with pod and pull policy of Always" (KEP-4639, GA in Kubernetes
// 1.36; containerd 1.6 failed it with `failed to mkdir ""`): a pod mounts
// an image as a read-only volume, and its container reads the image's
// files and runs its binary. With pullPolicy Always the image comes from
// the cluster's registry; with IfNotPresent it is one the node imported.
func TestImageVolume(t *testing.T) {
	c := Start(t, Options{Nodes: 2, WaitReady: true})
	greeting := filepath.Join(t.TempDir(), "greeting")
	if err := os.WriteFile(greeting, []byte("hello from an image volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := images.Build(images.Spec{Ref: Registry + "/volumes/echo:v2",
		Binary: filepath.Join(filepath.Dir(c.Bin), "bin", "echo-v2"), Path: "/echo",
		Files: map[string]string{"/data/greeting": greeting}})
	if err != nil {
		t.Fatal(err)
	}
	pushed := c.Push(img, "volumes/echo:v2")
	for _, tc := range []struct {
		name, image string
		policy      corev1.PullPolicy
		files       map[string]string // path in the image → content
	}{
		{"always", pushed, corev1.PullAlways, map[string]string{"data/greeting": "hello from an image volume\n"}},
		{"if-not-present", "skiff.local/echo:v2", corev1.PullIfNotPresent, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pod := "image-volume-" + tc.name
			createImageVolumePod(t, c, pod, tc.image, tc.policy)
			c.WaitPod(t, pod, podReady)
			// What a user would try: run the mounted image's program.
			out, err := c.Kubectl("exec", pod, "--", "/volume/echo", "-version")
			if err != nil || strings.TrimSpace(out) != "v2" {
				t.Errorf("kubectl exec %s -- /volume/echo -version: %q, %v; want v2", pod, out, err)
			}
			for path, want := range tc.files {
				if got := c.PodGet(t, pod, "/file/volume/"+path); got != want {
					t.Errorf("%s: /volume/%s reads %q, want %q", pod, path, got, want)
				}
			}
			// The volume is read-only, as KEP-4639 has it.
			p := c.GetPod(t, pod)
			if out, err := c.node(p.Spec.NodeName).Exec("curl", "-sSf", "--max-time", "5", "-X", "PUT", "--data-binary", "x",
				"http://"+p.Status.PodIP+":8080/file/volume/written"); err == nil {
				t.Errorf("%s: a write into the image volume succeeded (%q); it must be read-only", pod, out)
			}
		})
	}
}

// createImageVolumePod runs the echo server (v1) with image mounted at
// /volume, deleting the pod when the test ends.
func createImageVolumePod(t *testing.T, c *Cluster, name, image string, policy corev1.PullPolicy) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "echo", Image: "skiff.local/echo:v1", ImagePullPolicy: corev1.PullIfNotPresent,
				VolumeMounts: []corev1.VolumeMount{{Name: "image", MountPath: "/volume"}},
			}},
			Volumes: []corev1.Volume{{Name: "image", VolumeSource: corev1.VolumeSource{
				Image: &corev1.ImageVolumeSource{Reference: image, PullPolicy: policy}}}},
		},
	}
	pods := c.Client().CoreV1().Pods("default")
	if _, err := pods.Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() { pods.Delete(context.Background(), name, metav1.DeleteOptions{}) })
}
