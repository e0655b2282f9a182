package skiffserver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeSkiff writes a shell script that stands in for the skiff binary, so
// that Start's handling of the ready line, the log and Close can be tested
// in a second instead of starting a real control plane.
func fakeSkiff(t *testing.T, body string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "skiff")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestStartWaitsForReadyLineAndCloseCleansUp(t *testing.T) {
	bin := fakeSkiff(t, `echo "skiff: starting etcd"
echo "skiff: etcd ready in 0.4s"
echo "skiff: ready in 1.5s; kubeconfig: $3/kubeconfig (try: skiff kubectl get nodes)"
exec sleep 60
`)
	parent := t.TempDir()
	s, err := Start(context.Background(), bin, parent)
	if err != nil {
		t.Fatal(err)
	}
	if s.ReadySelf != "1.5s" {
		t.Errorf("ReadySelf = %q, want 1.5s (the line that names the kubeconfig)", s.ReadySelf)
	}
	if s.ReadyWall <= 0 {
		t.Errorf("ReadyWall = %v, want > 0", s.ReadyWall)
	}
	if s.HTTPSPort == 0 || s.EtcdPort != s.HTTPSPort+1 {
		t.Errorf("ports https %d etcd %d: want etcd right after https", s.HTTPSPort, s.EtcdPort)
	}
	if want := filepath.Join(s.DataDir, "kubeconfig"); s.Kubeconfig() != want {
		t.Errorf("Kubeconfig() = %q, want %q", s.Kubeconfig(), want)
	}
	if rss, peak, err := s.Memory(); err != nil || rss == 0 || peak < rss {
		t.Errorf("Memory() = %d, %d, %v: want 0 < rss <= peak", rss, peak, err)
	}
	if tail := s.Tail(); !strings.Contains(tail, "starting etcd") {
		t.Errorf("Tail() = %q, want the server's output", tail)
	}

	begin := time.Now()
	s.Close()
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("Close took %v: SIGTERM should have ended it", d)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("Close left %d entries in the parent dir", len(entries))
	}
}

func TestStartReportsEarlyExitWithLastOutput(t *testing.T) {
	bin := fakeSkiff(t, `echo "skiff: --https-port $5 is already in use"
exit 3
`)
	parent := t.TempDir()
	_, err := Start(context.Background(), bin, parent)
	if err == nil {
		t.Fatal("Start succeeded for a server that exited")
	}
	for _, want := range []string{"exited before ready", "exit status 3", "is already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("a failed Start left %d entries in the parent dir", len(entries))
	}
}

func TestStartStopsOnCancel(t *testing.T) {
	bin := fakeSkiff(t, "exec sleep 60\n")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Start(ctx, bin, t.TempDir()); err == nil || ctx.Err() == nil {
		t.Fatalf("Start = %v, want the context's error", err)
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < 20000 || p >= 40000 || seen[p] {
			t.Errorf("ports %v: want 4 distinct in 20000-39999", ports)
		}
		seen[p] = true
	}
	base, err := freeRun(3)
	if err != nil {
		t.Fatal(err)
	}
	for p := base; p < base+3; p++ {
		if !free(p) {
			t.Errorf("port %d of the run at %d is not free", p, base)
		}
	}
}
