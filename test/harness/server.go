package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Server is a `skiff server` process a test started.
type Server struct {
	t        testing.TB
	Bin      string
	DataDir  string
	Port     int
	EtcdPort int
	Args     []string
	cmd      *exec.Cmd
	out      *Output
	exited   chan struct{}
}

// NewServer prepares a server on free loopback ports with its own data dir.
func NewServer(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	base := FreePorts(t, 3)
	return &Server{t: t, Bin: Binary(t), DataDir: filepath.Join(TempDir(t, "server"), "data"),
		Port: base, EtcdPort: base + 1, Args: extraArgs}
}

// Start starts the server and waits for its ready line.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.StartErr(); err != nil {
		s.t.Fatal(err)
	}
}

// StartErr is Start returning the failure instead of failing the test.
func (s *Server) StartErr() error {
	args := append([]string{"server", "--data-dir", s.DataDir, "--https-port", strconv.Itoa(s.Port),
		"--etcd-port", strconv.Itoa(s.EtcdPort), "--disable-agent"}, s.Args...)
	s.out = &Output{}
	s.cmd = exec.Command(s.Bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	s.t.Cleanup(s.Stop)
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(s.out.String(), "ready in") {
		select {
		case <-s.exited:
			return fmt.Errorf("skiff server exited before ready: %v\n%s", s.cmd.ProcessState, s.out)
		case <-deadline:
			return fmt.Errorf("skiff server not ready after 2m:\n%s", s.out)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Output is what the server printed so far.
func (s *Server) Output() string { return s.out.String() }

// Stop ends the server (SIGTERM, then SIGKILL) if it is running.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// Kubeconfig is the admin kubeconfig the server wrote.
func (s *Server) Kubeconfig() string { return filepath.Join(s.DataDir, "kubeconfig") }

// Client is a client-go clientset with the admin credentials.
func (s *Server) Client() kubernetes.Interface {
	s.t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig())
	if err != nil {
		s.t.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(rc)
}

// Kubectl runs `skiff kubectl` with the server's data dir and no KUBECONFIG,
// so it exercises the default-kubeconfig lookup, and returns combined output.
func (s *Server) Kubectl(args ...string) (string, error) {
	cmd := exec.Command(s.Bin, append([]string{"kubectl"}, args...)...)
	cmd.Env = append(filteredEnv("KUBECONFIG"), "SKIFF_DATA_DIR="+s.DataDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("skiff kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustKubectl is Kubectl failing the test on error.
func (s *Server) MustKubectl(args ...string) string {
	s.t.Helper()
	out, err := s.Kubectl(args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func filteredEnv(drop string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, drop+"=") {
			env = append(env, kv)
		}
	}
	return env
}
