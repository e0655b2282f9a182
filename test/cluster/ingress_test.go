package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestIngress is issue 7's acceptance points 1, 3 and 4 through a node's
// proxy, from the client namespace outside the cluster.
func TestIngress(t *testing.T) {
	c := Start(t, Options{Nodes: 3, WaitReady: true})
	for _, h := range []string{"a.example", "b.example"} {
		c.tlsSecret(t, "tls-"+h[:1], h)
	}
	c.MustKubectl("apply", "-f", "testdata/echo.yaml", "-f", "testdata/ingress.yaml")
	c.WaitRollout(t, "deployment/echo")
	node := c.Nodes[1].IP
	curl := func(args ...string) (string, error) {
		return c.ClientExec("curl", append([]string{"-sS", "--max-time", "5"}, args...)...)
	}
	// The first request can race the route's arrival on the node.
	if err := poll(30*time.Second, func() bool {
		out, err := curl("-H", "Host: a.example", "http://"+node+"/")
		return err == nil && strings.Contains(out, `"pod"`)
	}); err != nil {
		t.Fatalf("Ingress never answered on %s: %v", node, err)
	}

	t.Run("HostAndPath", func(t *testing.T) {
		for host, want := range map[string]string{"a.example": `"pod"`, "x.wild.example": "404"} {
			out, _ := curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: "+host, "http://"+node+"/")
			if host == "a.example" {
				out, _ = curl("-H", "Host: "+host, "http://"+node+"/")
			}
			if !strings.Contains(out, want) {
				t.Errorf("Host %s: got %q, want %q", host, out, want)
			}
		}
		out, _ := curl("-H", "Host: x.wild.example", "http://"+node+"/only/here")
		if !strings.Contains(out, `"path":"/only/here"`) {
			t.Errorf("wildcard host, Exact path: %q", out)
		}
	})
	t.Run("TLSBySNI", func(t *testing.T) {
		for _, h := range []string{"a.example", "b.example"} {
			out, err := curl("-v", "-k", "--http2", "--resolve", h+":443:"+node, "-o", "/dev/null", "-w", "%{http_version}", "https://"+h+"/")
			if err != nil || !strings.Contains(out, "CN="+h) || !strings.HasSuffix(strings.TrimSpace(out), "2") {
				t.Errorf("https://%s: want certificate CN=%s over HTTP/2:\n%s %v", h, h, out, err)
			}
		}
	})
	t.Run("H2C", func(t *testing.T) {
		out, err := curl("--http2-prior-knowledge", "-H", "Host: a.example", "http://"+node+"/")
		if err != nil || !strings.Contains(out, `"proto":"HTTP/1.1"`) && !strings.Contains(out, `"proto":"HTTP/2.0"`) {
			t.Errorf("h2c request: %q %v", out, err)
		}
	})
	t.Run("WebSocket", func(t *testing.T) {
		conn, err := dialer(c.ClientNS)(context.Background(), "tcp", node+":80")
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := websocket.NewConfig("ws://a.example/ws", "http://a.example/")
		ws, err := websocket.NewClient(cfg, conn)
		if err != nil {
			t.Fatalf("WebSocket handshake through the proxy: %v", err)
		}
		defer ws.Close()
		ws.Write([]byte("hello"))
		buf := make([]byte, 16)
		ws.SetDeadline(time.Now().Add(5 * time.Second))
		n, err := ws.Read(buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Errorf("WebSocket echo: %q %v", buf[:n], err)
		}
	})
	t.Run("GRPC", func(t *testing.T) {
		d := dialer(c.ClientNS)
		cc, err := grpc.NewClient("passthrough:///"+node+":80", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority("grpc.example"),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d(ctx, "tcp", addr) }))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("gRPC health check through the proxy: %v %v", resp, err)
		}
	})
	t.Run("NewRouteWithin1s", func(t *testing.T) {
		c.MustKubectl("create", "ingress", "late", "--rule", "late.example/=echo:80")
		start := time.Now()
		if err := poll(10*time.Second, func() bool {
			out, _ := curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: late.example", "http://"+node+"/")
			return out == "200"
		}); err != nil {
			t.Fatal("new Ingress never served")
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("new route served after %v, want within 1 s", d)
		}
	})
	t.Run("RollingUpdateUnderLoad", func(t *testing.T) {
		done := make(chan string, 1)
		go func() {
			out, err := c.ClientExec("hey", "-z", "30s", "-c", "4", "-host", "a.example", "http://"+node+"/")
			done <- fmt.Sprint(out, err)
		}()
		time.Sleep(2 * time.Second)
		c.MustKubectl("set", "image", "deployment/echo", "echo=skiff.local/echo:v2")
		c.WaitRollout(t, "deployment/echo")
		out := <-done
		if codes := heyStatusCodes(out); len(codes) != 1 || codes[0] != "200" || strings.Contains(out, "Error distribution") {
			t.Errorf("non-2xx responses through the proxy during a rolling update (codes %v):\n%s", codes, out)
		}
	})
}

// tlsSecret stores a self-signed certificate for host as a
// kubernetes.io/tls Secret.
func (c *Cluster) tlsSecret(t *testing.T, name, host string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}}
	if _, err := c.Client().CoreV1().Secrets("default").Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
