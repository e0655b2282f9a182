package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/skiffnet/skiff/ingress/routes"
)

// wsProxy is a proxy in front of a WebSocket echo backend.
func wsProxy(t *testing.T) *running {
	echo := startBackend(t, "ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }), false)
	var w world
	w.service("ws", "", echo.addr)
	w.ingress("ws", "", "/", "ws")
	return startProxy(t, Options{}, w.table(t))
}

func TestWebSocket(t *testing.T) {
	p := wsProxy(t)

	cfg, err := websocket.NewConfig(strings.Replace(p.httpURL, "http", "ws", 1)+"/echo", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := cfg.DialContext(context.Background())
	if err != nil {
		t.Fatalf("WebSocket handshake through the proxy: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	for _, msg := range []string{"hello", "through", "skiff"} {
		if err := websocket.Message.Send(conn, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(conn, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Errorf("echo %q, want %q", got, msg)
		}
	}
}

// A gRPC backend declared kubernetes.io/h2c gets HTTP/2 from the proxy,
// whether the client came with h2c or TLS.
func TestGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := grpchealth.NewServer()
	hs.SetServingStatus("skiff.test", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	var w world
	w.service("grpc", routes.AppProtocolH2C, ln.Addr().String())
	w.ingress("grpc", "", "/", "grpc")
	p := startProxy(t, Options{}, w.table(t))

	for _, c := range []struct {
		name   string
		target string
		creds  credentials.TransportCredentials
	}{
		{"h2c", strings.TrimPrefix(p.httpURL, "http://"), insecure.NewCredentials()},
		{"tls", p.httpsAddr, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})},
	} {
		t.Run(c.name, func(t *testing.T) {
			cc, err := grpc.NewClient(c.target, grpc.WithTransportCredentials(c.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			client := healthpb.NewHealthClient(cc)
			resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "skiff.test"})
			if err != nil {
				t.Fatalf("Check through the proxy: %v", err)
			}
			if resp.Status != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("status %v, want SERVING", resp.Status)
			}
			// An error travels in trailers: they must come through.
			_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
			if err == nil || !strings.Contains(err.Error(), "NotFound") {
				t.Errorf("unknown service: %v, want NotFound from the backend's trailers", err)
			}
			// A server stream relays messages as they come.
			stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "skiff.test"})
			if err != nil {
				t.Fatal(err)
			}
			if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("first watch message %v, %v", m, err)
			}
			hs.SetServingStatus("skiff.test", healthpb.HealthCheckResponse_NOT_SERVING)
			defer hs.SetServingStatus("skiff.test", healthpb.HealthCheckResponse_SERVING)
			if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("second watch message %v, %v", m, err)
			}
		})
	}
}

// Requests to an h2c backend travel as HTTP/2 even from HTTP/1.1 clients.
func TestH2CToBackend(t *testing.T) {
	b := startBackend(t, "h2", nil, true)
	var w world
	w.service("h2", routes.AppProtocolH2C, b.addr)
	w.ingress("h2", "", "/", "h2")
	p := startProxy(t, Options{}, w.table(t))
	code, body, _ := get(t, plainClient, p.httpURL+"/", "x")
	if code != 200 || !strings.Contains(body, "proto=HTTP/2.0") {
		t.Errorf("%d %q, want the backend to see HTTP/2.0", code, body)
	}
	_ = http.StatusOK
}

// A WebSocket upgrade after plain requests on the same connection is
// handed from the lean path to net/http and switches protocols.
func TestWebSocketAfterPlainRequests(t *testing.T) {
	p := wsProxy(t)
	nc, err := net.Dial("tcp", strings.TrimPrefix(p.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(nc)
	for range 3 {
		io.WriteString(nc, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	io.WriteString(nc, "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost/\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %s, want 101", resp.Status)
	}
	// one unmasked-by-server text frame "hi" sent masked, as a client must
	io.WriteString(nc, "\x81\x82\x01\x02\x03\x04"+string([]byte{'h' ^ 1, 'i' ^ 2}))
	frame := make([]byte, 4)
	if _, err := io.ReadFull(br, frame); err != nil || string(frame[2:]) != "hi" {
		t.Errorf("echo frame %q, %v; want a text frame with hi", frame, err)
	}
}
